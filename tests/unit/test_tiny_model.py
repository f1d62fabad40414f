"""kiln's tiny models are deterministic and load in transformers."""

from __future__ import annotations

import json
from pathlib import Path

from services.llm.tiny import TinyConfig, build_tiny_model


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, tiny_model: Path) -> None:
    config = TinyConfig()
    again = build_tiny_model(tmp_path / "again", seed=0, config=config)
    other = build_tiny_model(tmp_path / "other", seed=1, config=config)
    first = json.loads((tiny_model / "kiln_tiny.json").read_text())
    assert again["weights_sha256"] == first["weights_sha256"]
    assert again["tokenizer_sha256"] == first["tokenizer_sha256"]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (
        tiny_model / "tokenizer.json"
    ).read_bytes()
    assert other["weights_sha256"] != first["weights_sha256"]


def test_loads_with_chat_template(tiny_model: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model)
    assert config.model_type == "llama"
    assert config.hidden_size // config.num_attention_heads == 64  # vLLM on CPU needs >= 32
    assert config.num_key_value_heads == 1  # grouped KV heads
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|bos|><|user|>hi<|end|><|assistant|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    special = tokenizer.convert_tokens_to_ids(["<|bos|>", "<|user|>", "<|end|>", "<|assistant|>"])
    assert ids[:2] == special[:2] and ids[-2:] == special[2:]
    assert tokenizer.decode(ids[2:-2]) == "hi"
    assert tokenizer.decode(tokenizer("12 + 30 = 42")["input_ids"]) == "12 + 30 = 42"
