"""A synthetic key-value retrieval task and the tiny reference model kiln trains on it, so
that KV-cache compression quality can be measured for real on CPU.

A sample is a haystack of `filler` noise tokens with `pairs` key-value facts scattered in it,
each one token "K12V7" (key 12 has value 7), then `queries` questions "? K12" whose answer is
the next token, "V7". Answering needs attention back to the one token holding the fact, so
evicting it, or quantizing keys too coarsely to find it, costs accuracy. One attention layer
can answer (the fact is a single token), so the model trains in a couple of minutes on CPU.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RetrievalTask:
    num_keys: int = 128
    num_values: int = 16
    pairs: int = 128
    filler: int = 0
    filler_vocab: int = 64
    queries: int = 8

    def sample(
        self, rng: random.Random, pairs: int | None = None
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """(context words, [(query key, value word)]) with `pairs` facts (default: the task's)."""
        pairs = pairs or self.pairs
        keys = rng.sample(range(self.num_keys), pairs)
        values = [rng.randrange(self.num_values) for _ in keys]
        words = [f"K{k}V{v}" for k, v in zip(keys, values, strict=True)]
        words += [f"F{rng.randrange(self.filler_vocab)}" for _ in range(self.filler)]
        rng.shuffle(words)
        asked = [rng.randrange(pairs) for _ in range(self.queries)]
        return words, [(f"K{keys[i]}", f"V{values[i]}") for i in asked]

    def vocabulary(self) -> list[str]:
        return (
            ["<|pad|>", "<|bos|>", "<|eos|>", "?"]
            + [f"K{i}" for i in range(self.num_keys)]
            + [f"V{i}" for i in range(self.num_values)]
            + [f"F{i}" for i in range(self.filler_vocab)]
            + [f"K{k}V{v}" for k in range(self.num_keys) for v in range(self.num_values)]
        )


@dataclass(frozen=True)
class TrainConfig:
    # (steps, facts per sample): the lookup is learned on short haystacks first, then the
    # haystack grows (a cold start on long ones plateaus at chance for thousands of steps)
    schedule: tuple[tuple[int, int], ...] = ((600, 32), (500, 64), (700, 128))
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup: int = 100
    seed: int = 0
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2  # head_dim 64
    num_kv_heads: int = 1


def build_tokenizer(task: RetrievalTask) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(task.vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    return tokenizer


def encode_sample(
    tokenizer: Any, words: list[str], qa: list[tuple[str, str]]
) -> tuple[list[int], list[int]]:
    """Token ids of the whole sample and the positions whose next token is an answer."""
    tokens = ["<|bos|>", *words]
    targets = []
    for key, value in qa:
        tokens += ["?", key]
        targets.append(len(tokens) - 1)
        tokens.append(value)
    return tokenizer.convert_tokens_to_ids(tokens), targets


def prompt_tokens(words: list[str], key: str) -> list[str]:
    """The prompt asking for key's value (the answer is the next token)."""
    return ["<|bos|>", *words, "?", key]


def train_reference_model(
    out: str | Path,
    task: RetrievalTask | None = None,
    config: TrainConfig | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Trains the reference model (seeded) and writes a transformers/vLLM-loadable folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    task = task or RetrievalTask()
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = build_tokenizer(task)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=2 * config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads,
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / config.warmup)
    )
    start = time.perf_counter()
    stages = [pairs for steps, pairs in config.schedule for _ in range(steps)]
    for step, pairs in enumerate(stages):
        samples = [
            encode_sample(tokenizer, *task.sample(rng, pairs)) for _ in range(config.batch_size)
        ]
        ids = torch.tensor([s[0] for s in samples])
        rows = torch.arange(len(samples)).repeat_interleave(task.queries)
        cols = torch.tensor([p for s in samples for p in s[1]])
        logits = model(input_ids=ids).logits[rows, cols]
        loss = torch.nn.functional.cross_entropy(logits, ids[rows, cols + 1])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        if step % 250 == 0 or step == len(stages) - 1:
            accuracy = (logits.argmax(-1) == ids[rows, cols + 1]).float().mean().item()
            log(
                f"step {step}: loss {loss.item():.3f}, answer accuracy {accuracy:.2f}, "
                f"{time.perf_counter() - start:.0f}s"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {
        "task": asdict(task),
        "train": asdict(config),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "kiln_retrieval.json").write_text(json.dumps(info, indent=2))
    return info
