"""Training rows -> token ids -> padded batches.

Row formats (JSON Lines, or one JSON list):
- SFT: {"prompt": text | messages, "completion": text}, or {"messages": [..., assistant]}
  (the last assistant turn is the completion; judge distillation and crowd rejection
  sampling sets use this form).
- Preference (DPO, BMC, RISE): {"prompt": text | messages, "chosen": text, "rejected": text}.
A completion is encoded on its own and followed by EOS; a prompt of chat messages goes
through the model's chat template (services.llm.tokens). Sequences longer than max_length
keep the end of the prompt and the start of the completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from services.common.errors import InvalidInput
from services.common.json_input import load_json
from services.llm.base import Prompt, validate_prompt
from services.llm.tokens import encode_continuation, encode_prompt
from services.trainer.core.bmc import diff_masks


def read_rows(data: bytes, field: str) -> list[dict[str, Any]]:
    """Rows of JSON Lines or of one JSON list; an error names the line it is on."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(field, f"not UTF-8 text: {exc}") from None
    if text.lstrip().startswith("["):
        rows = load_json(text, field)
    else:
        rows = [
            load_json(line, f"{field}[line {number}]")
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise InvalidInput(field, "needs at least one row, each a JSON object")
    return rows


@dataclass(frozen=True)
class SFTExample:
    input_ids: list[int]
    completion_start: int  # tokens from here on are trained on

    @property
    def targets(self) -> int:
        """Tokens the loss predicts (never the first: nothing precedes it)."""
        return len(self.input_ids) - max(self.completion_start, 1)


@dataclass(frozen=True)
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def _prompt_of(row: dict[str, Any], field: str) -> Prompt:
    try:
        return validate_prompt(row["prompt"])
    except KeyError:
        raise InvalidInput(field, "missing 'prompt'") from None
    except InvalidInput as exc:
        raise InvalidInput(field, exc.reason) from None


def _text(row: dict[str, Any], key: str, field: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"'{key}' must be a non-empty string")
    return value


def fit(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Truncates prompt (from the left) and completion (from the right) to max_length in all,
    giving the completion at least half of it."""
    completion = completion[: max(max_length - len(prompt), max_length // 2)]
    prompt = prompt[max(0, len(prompt) - (max_length - len(completion))) :]
    return prompt, completion


def sft_example(tokenizer: Any, row: dict[str, Any], max_length: int, field: str) -> SFTExample:
    if "messages" in row:
        messages = row["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or messages[-1].get("role") != "assistant"
        ):
            raise InvalidInput(field, "'messages' must end with an assistant turn")
        prompt: Prompt = validate_prompt(messages[:-1]) if len(messages) > 1 else ""
        completion = messages[-1].get("content") or ""
    else:
        prompt, completion = _prompt_of(row, field), _text(row, "completion", field)
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = [*encode_continuation(tokenizer, completion), tokenizer.eos_token_id]
    prompt_ids, completion_ids = fit(prompt_ids, completion_ids, max_length)
    return SFTExample(prompt_ids + completion_ids, len(prompt_ids))


def pair_example(tokenizer: Any, row: dict[str, Any], max_length: int, field: str) -> PairExample:
    prompt_ids = encode_prompt(tokenizer, _prompt_of(row, field))
    eos = [tokenizer.eos_token_id]
    chosen = encode_continuation(tokenizer, _text(row, "chosen", field)) + eos
    rejected = encode_continuation(tokenizer, _text(row, "rejected", field)) + eos
    longest = max(len(chosen), len(rejected))
    kept_prompt, _ = fit(prompt_ids, [0] * longest, max_length)
    budget = max_length - len(kept_prompt)
    return PairExample(kept_prompt, chosen[:budget], rejected[:budget])


def pad_batch(
    sequences: Sequence[list[int]], starts: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and completion_mask [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        completion[i, start : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    return pad_batch(
        [e.input_ids for e in examples], [e.completion_start for e in examples], pad_id
    )


def pack_examples(examples: Sequence[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Rows of whole examples, at most max_length tokens each (first fit, in order)."""
    rows: list[list[SFTExample]] = []
    room: list[int] = []
    for example in examples:
        size = len(example.input_ids)
        row = next((i for i, free in enumerate(room) if free >= size), None)
        if row is None:
            rows.append([example])
            room.append(max_length - size)
        else:
            rows[row].append(example)
            room[row] -= size
    return rows


def collate_packed(rows: Sequence[Sequence[SFTExample]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows [B, T]: input_ids, position_ids restarting at 0 for every example (and for
    the padding, a segment of its own), attention_mask (1 on real tokens, for counting) and
    completion_mask (never on an example's first token). Without a 2-D mask, transformers
    reads the segments from position_ids and keeps attention within each (causal)."""
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        offset = 0
        for example in row:
            size = len(example.input_ids)
            ids[i, offset : offset + size] = torch.tensor(example.input_ids)
            positions[i, offset : offset + size] = torch.arange(size)
            attention[i, offset : offset + size] = 1
            completion[i, offset + max(example.completion_start, 1) : offset + size] = 1
            offset += size
        positions[i, offset:] = torch.arange(width - offset)
    return {
        "input_ids": ids,
        "attention_mask": attention,
        "completion_mask": completion,
        "position_ids": positions,
    }


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch [2B, T]: the B chosen sequences, then the B rejected ones (as TRL does)."""
    sequences = [e.prompt_ids + e.chosen_ids for e in examples]
    sequences += [e.prompt_ids + e.rejected_ids for e in examples]
    starts = [len(e.prompt_ids) for e in examples] * 2
    return pad_batch(sequences, starts, pad_id)


def diff_token_mask(
    tokenizer: Any, examples: Sequence[PairExample], width: int, exclude_stopwords: bool
) -> torch.Tensor:
    """BMC's m_t aligned with token_logps [2B, width - 1] of a collate_pairs batch."""
    mask = torch.zeros((2 * len(examples), width - 1))
    for i, e in enumerate(examples):
        mask_w, mask_l = diff_masks(tokenizer, e.chosen_ids, e.rejected_ids, exclude_stopwords)
        start = len(e.prompt_ids) - 1  # token t of the completion is predicted at index t - 1
        mask[i, start : start + len(mask_w)] = torch.tensor(mask_w, dtype=torch.float)
        row = len(examples) + i
        mask[row, start : start + len(mask_l)] = torch.tensor(mask_l, dtype=torch.float)
    return mask
