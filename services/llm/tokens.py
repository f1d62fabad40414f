"""Prompt tokenization shared by the local backends (hf and vllm tokenize the same way)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput
from services.llm.base import Prompt


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInput(
            "messages",
            "the model has no chat template; send raw text instead "
            "(`prompt`, `kiln generate --raw`, `raw_prompt` for the prober)",
        )
    if messages[-1]["role"] == "assistant":  # a partial assistant turn to continue
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Raw text gets the tokenizer's special tokens (BOS); a chat template already has them."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return list(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def encode_context(tokenizer: Any, prompt: Prompt) -> list[int]:
    """encode_prompt for generating or scoring a continuation: the model conditions on at
    least one token (InvalidInput if the prompt encodes to none, e.g. "" with a tokenizer
    that adds no BOS: there is nothing to predict the first new token from)."""
    ids = encode_prompt(tokenizer, prompt)
    if not ids:
        raise InvalidInput("prompt", "encodes to no tokens; the model needs one to condition on")
    return ids


def context_length(config: Any) -> int:
    """Positions the model was trained for (max_position_embeddings); 0 when it says none."""
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def check_context(
    prompt_tokens: int, new_tokens: int, limit: int, what: str = "max_tokens"
) -> None:
    """InvalidInput naming `prompt` when the prompt and the tokens to add (max_tokens, or a
    scored continuation) do not fit the model's context of `limit` positions (0: no limit)."""
    if limit and prompt_tokens + new_tokens > limit:
        raise InvalidInput(
            "prompt",
            f"{prompt_tokens} prompt tokens + {what} {new_tokens} = "
            f"{prompt_tokens + new_tokens} exceed the model's context of {limit} tokens",
        )


def encode_continuation(tokenizer: Any, continuation: str) -> list[int]:
    """Continuation tokens are encoded on their own and appended to the prompt's tokens."""
    return list(tokenizer(continuation, add_special_tokens=False)["input_ids"])


def folder_fingerprint(path: str | Path) -> str:
    """sha256 over the names, sizes and mtimes of a model folder's files (cheap, no reads)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
