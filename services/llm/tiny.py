"""Tiny Llama-architecture models that kiln builds itself (no hub downloads).

The tokenizer is a byte-level BPE trained offline by `tokenizers` on a synthetic corpus drawn
from a seeded generator; the weights are a seeded random init. Both are deterministic: the same
seed gives byte-identical files. head_dim is 64 (vLLM on CPU needs >= 32).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "be",
    "this",
    "from",
    "or",
    "are",
    "not",
    "have",
    "answer",
    "question",
    "step",
    "first",
    "then",
    "next",
    "so",
    "total",
    "each",
    "number",
    "sum",
    "add",
    "subtract",
    "multiply",
    "divide",
    "equals",
    "result",
    "tool",
    "call",
    "function",
    "name",
    "arguments",
    "value",
    "key",
    "city",
    "weather",
    "date",
    "time",
    "price",
    "order",
    "user",
    "assistant",
    "system",
    "model",
    "token",
    "cache",
    "memory",
    "budget",
    "quantize",
    "prune",
    "judge",
    "response",
    "better",
    "worse",
    "because",
    "reason",
    "final",
    "option",
    "true",
    "false",
    "yes",
    "no",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "hundred",
    "thousand",
    "python",
    "code",
    "print",
    "return",
    "def",
    "import",
]


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 2048
    initializer_range: float = 0.05
    corpus_lines: int = 4000


def synthetic_corpus(seed: int, lines: int) -> list[str]:
    """Sentences of words, digits, arithmetic and JSON-ish tool calls from a seeded generator."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.5:
            corpus.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))))
        elif kind < 0.8:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            corpus.append(f"{a} + {b} = {a + b}. {a} * {b} = {a * b}.")
        else:
            city = rng.choice(["Paris", "Tokyo", "Lima", "Oslo", "Cairo"])
            corpus.append(json.dumps({"name": "get_weather", "arguments": {"city": city}}))
    return corpus


def train_tokenizer(seed: int, config: TinyConfig) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(synthetic_corpus(seed, config.corpus_lines), trainer=trainer)
    return tokenizer


def build_tiny_model(
    out: str | Path, seed: int = 0, config: TinyConfig | None = None
) -> dict[str, Any]:
    """Writes a transformers/vLLM-loadable model folder; returns a summary with its hashes."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    config = config or TinyConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(seed, config),
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    ids = {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>") for name in ("bos", "eos", "pad")}
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_config).float().eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], do_sample=False
    )
    model.save_pretrained(out, safe_serialization=True)
    weights = (out / "model.safetensors").read_bytes()
    info = {
        "seed": seed,
        "config": asdict(config),
        "parameters": model.num_parameters(),
        "vocab_size": len(tokenizer),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
    }
    (out / "kiln_tiny.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return info
