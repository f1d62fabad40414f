"""GPU-only checks: the kiln cache on CUDA decodes as on CPU, and vLLM's fp8 KV cache holds
twice the tokens of its 16-bit one in the same memory. Skipped without a CUDA device."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CONFIGS = [
    ("none", {"bits": 16}),
    ("snapkv", {"budget_fp16_tokens": 24, "window_size": 8}),
    ("pyramidkv", {"budget_fp16_tokens": 24, "window_size": 8, "bits": 4}),
    ("h2o", {"budget_fp16_tokens": 20, "compress_decode": True}),
    (
        "streamingllm",
        {
            "bits": 4,
            "group_size": 16,
            "residual_length": 16,
            "budget_fp16_tokens": 43,
            "compress_decode": True,
        },
    ),
]


def test_kiln_cache_on_cuda_decodes_as_on_cpu(tiny_model: Path) -> None:
    from services.kv.budget import KVConfig
    from services.llm import SamplingParams
    from services.llm.hf import HFBackend

    prompt = "the weather in Paris is fine and 12 + 30 = 42 so the answer is " * 4
    cpu, cuda = HFBackend(tiny_model), HFBackend(tiny_model, device="cuda")
    params = SamplingParams(max_tokens=24)
    for method, options in CONFIGS:
        kv = KVConfig(method, **options)
        on_cpu, on_cuda = [], []
        want = [t for t, *_ in cpu.stream(prompt, params, kv=kv, kv_stats=on_cpu)]
        got = [t for t, *_ in cuda.stream(prompt, params, kv=kv, kv_stats=on_cuda)]
        assert got == want, method
        assert on_cuda[0].bytes_used == on_cpu[0].bytes_used
        assert on_cuda[0].tokens_per_layer == on_cpu[0].tokens_per_layer


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_vllm_fp8_kv_cache_holds_twice_the_blocks(tiny_model: Path) -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cuda():
        pytest.skip("this vllm build has no CUDA platform")
    from services.llm import SamplingParams
    from services.llm.vllm_engine import VLLMBackend, VLLMConfig

    blocks, outputs = {}, {}
    for kv_dtype in ("auto", "fp8"):
        backend = VLLMBackend(
            tiny_model,
            VLLMConfig(dtype="float16", kv_cache_dtype=kv_dtype, kv_cache_memory_bytes=256 << 20),
        )
        blocks[kv_dtype] = backend.llm.llm_engine.vllm_config.cache_config.num_gpu_blocks
        outputs[kv_dtype] = backend.generate(["the answer is"], SamplingParams(max_tokens=8))[0]
        backend.llm.llm_engine.engine_core.shutdown()
        del backend
        torch.cuda.empty_cache()
    # one byte per element instead of two: the same memory holds about twice the blocks
    assert blocks["fp8"] == pytest.approx(2 * blocks["auto"], rel=0.05)
    assert len(outputs["fp8"].token_ids) == 8
