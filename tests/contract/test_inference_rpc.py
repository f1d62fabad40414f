"""Inference over real gRPC: LoadModel, streaming Generate, Abort, Score, and the remote
backend that every other service uses."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from kiln.inference.v1 import inference_pb2 as pb
from services.common.clients import KilnClient
from services.common.settings import Settings
from services.llm import SamplingParams
from services.llm.hf import HFBackend
from services.llm.remote import RemoteBackend


@pytest.fixture
def inference(grpc_server, redis_url: str, tiny_model: Path) -> KilnClient:
    settings = Settings(redis_url=redis_url, max_concurrent_generations=1)
    server = grpc_server("inference", settings)
    client = KilnClient("inference", target=server.target, settings=settings)
    info = client.stub.LoadModel(
        pb.LoadModelRequest(name="tiny", local_path=str(tiny_model), dtype="float32")
    )
    assert (info.engine, info.num_layers, info.num_kv_heads, info.head_dim) == ("hf", 2, 1, 64)
    assert info.parameters == 426_624
    yield client
    client.close()


def test_list_models(inference: KilnClient) -> None:
    (model,) = inference.stub.ListModels(pb.ListModelsRequest()).models
    assert model.name == "tiny" and model.dtype == "float32"  # as asked (the default is bfloat16)


def test_streamed_generate_equals_local_greedy(inference: KilnClient, tiny_model: Path) -> None:
    local = HFBackend(tiny_model).generate(
        ["the answer is"], SamplingParams(max_tokens=16, logprobs=True)
    )[0]
    request = pb.GenerateRequest(
        request_id="g1",
        model="tiny",
        prompt="the answer is",
        sampling=pb.SamplingParams(max_tokens=16, return_logprobs=True),
    )
    responses = list(inference.stub.Generate(request, timeout=60))
    chunks = [r.chunk for r in responses if r.WhichOneof("kind") == "chunk"]
    (complete,) = [r.complete for r in responses if r.WhichOneof("kind") == "complete"]
    assert responses[-1].WhichOneof("kind") == "complete" and len(chunks) > 1
    assert list(complete.token_ids) == local.token_ids
    assert [t for c in chunks for t in c.token_ids] == local.token_ids
    assert "".join(c.text for c in chunks) == complete.text == local.text
    # the served stream's cache holds keys and values at 16 bits, generate()'s at 32
    assert list(complete.logprobs) == pytest.approx(local.logprobs, abs=1e-3)
    assert complete.usage.completion_tokens == 16 and complete.finish_reason == "length"
    assert complete.usage.prompt_tokens == local.prompt_tokens and complete.engine == "hf"


def test_abort_mid_stream_frees_the_slot(inference: KilnClient) -> None:
    """A long generation is aborted after its first chunk; the next one runs."""
    request = pb.GenerateRequest(
        request_id="long",
        model="tiny",
        prompt="the answer is",
        sampling=pb.SamplingParams(max_tokens=2000),
    )
    stream = inference.stub.Generate(request, timeout=120)
    first = next(stream)
    assert first.WhichOneof("kind") == "chunk"
    assert inference.stub.Abort(pb.AbortRequest(request_id="long")).aborted
    rest = list(stream)
    assert rest[-1].complete.finish_reason == "abort"
    assert len(rest[-1].complete.token_ids) < 2000
    assert not inference.stub.Abort(pb.AbortRequest(request_id="long")).aborted
    quick = pb.GenerateRequest(
        request_id="next", model="tiny", prompt="x", sampling=pb.SamplingParams(max_tokens=2)
    )
    assert list(inference.stub.Generate(quick, timeout=10))[-1].complete.finish_reason


def test_client_cancel_frees_the_slot(inference: KilnClient) -> None:
    request = pb.GenerateRequest(
        request_id="cancelled",
        model="tiny",
        prompt="the",
        sampling=pb.SamplingParams(max_tokens=2000),
    )
    stream = inference.stub.Generate(request, timeout=120)
    next(stream)
    stream.cancel()
    deadline = time.monotonic() + 10
    quick = pb.GenerateRequest(
        request_id="after-cancel",
        model="tiny",
        prompt="x",
        sampling=pb.SamplingParams(max_tokens=2),
    )
    replies = list(inference.stub.Generate(quick, timeout=10))
    assert time.monotonic() < deadline and replies[-1].WhichOneof("kind") == "complete"


def test_remote_backend_equals_local(inference: KilnClient, tiny_model: Path) -> None:
    local = HFBackend(tiny_model)
    remote = RemoteBackend("tiny", client=inference)
    prompts = ["12 + 30 =", [{"role": "user", "content": "weather in Oslo?"}]]
    params = SamplingParams(max_tokens=10, logprobs=True)
    for got, want in zip(
        remote.generate(prompts, params), local.generate(prompts, params), strict=True
    ):
        assert got.token_ids == want.token_ids and got.text == want.text
    got = remote.score(prompts, [" 42", " sunny"])
    want = local.score(prompts, [" 42", " sunny"])
    for g, w in zip(got, want, strict=True):
        assert g.token_ids == w.token_ids
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-5)


@pytest.mark.parametrize(
    "request_,field",
    [
        (pb.GenerateRequest(model="tiny", prompt="x"), "request_id"),
        (pb.GenerateRequest(request_id="r", model="tiny"), "input"),
        (
            pb.GenerateRequest(
                request_id="r", model="tiny", prompt="x", sampling=pb.SamplingParams(temperature=-1)
            ),
            "sampling.temperature",
        ),
        (
            pb.GenerateRequest(
                request_id="r",
                model="tiny",
                messages=pb.Messages(messages=[pb.ChatMessage(role="robot", content="x")]),
            ),
            "prompt[0].role",
        ),
        (
            pb.GenerateRequest(request_id="r", model="tiny", prompt="x", engine="vllm"),
            "engine",  # tiny is loaded on hf: not silently served by it
        ),
    ],
)
def test_bad_generate_is_invalid_argument(inference: KilnClient, request_, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(inference.stub.Generate(request_, timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


def test_unknown_model_and_bad_sources(inference: KilnClient, tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError) as err:
        inference.stub.Score(
            pb.ScoreRequest(model="nope", items=[pb.ScoreItem(prompt="a", continuation="b")])
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        inference.stub.LoadModel(pb.LoadModelRequest(name="m", local_path=str(tmp_path)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("local_path")
    assert "is not a model folder (no config.json" in err.value.details()
    for name in ("a\x00b", "with space", "x" * 129, "a/b"):
        with pytest.raises(grpc.RpcError) as err:
            inference.stub.LoadModel(pb.LoadModelRequest(name=name, local_path=str(tmp_path)))
        assert err.value.details().startswith("name"), name
    with pytest.raises(grpc.RpcError) as err:
        inference.stub.LoadModel(pb.LoadModelRequest(name="m", checkpoint="../etc"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_generations_are_batched_and_exact(
    inference: KilnClient, tiny_model: Path
) -> None:
    """Six streams with different KV settings decode in one continuous batch on the server
    and return what each decodes alone, with the same KV stats."""
    from services.inference.servicer import kv_from_pb
    from services.kv.budget import KVConfig

    prompt = "the weather in Paris is fine and 12 + 30 = 42 so the answer is " * 4
    kvs = [
        pb.KVCompression(),
        pb.KVCompression(method="snapkv", budget_fp16_tokens=24, window_size=8),
        pb.KVCompression(method="h2o", budget_fp16_tokens=20, compress_decode=True),
        pb.KVCompression(
            method="h2o",
            bits=4,
            group_size=16,
            residual_length=16,
            budget_fp16_tokens=43,
            compress_decode=True,
        ),
        pb.KVCompression(method="streamingllm", bits=8, budget_fp16_tokens=40),
        pb.KVCompression(bits=2, group_size=16, residual_length=16),
    ]
    local = HFBackend(tiny_model, decode_batch=1)
    params = SamplingParams(max_tokens=24)
    expected = []
    for kv in kvs:
        config: KVConfig | None = kv_from_pb(kv)
        stats: list = []
        tokens = [t for t, *_ in local.stream(prompt, params, kv=config, kv_stats=stats)]
        expected.append((tokens, stats[0].bytes_used if stats else 0))
    results: list = [None] * len(kvs)
    start = threading.Barrier(len(kvs))

    def run(i: int) -> None:
        request = pb.GenerateRequest(
            request_id=f"c{i}",
            model="tiny",
            prompt=prompt,
            kv=kvs[i],
            sampling=pb.SamplingParams(max_tokens=24),
        )
        start.wait()
        complete = list(inference.stub.Generate(request, timeout=60))[-1].complete
        results[i] = (list(complete.token_ids), complete.kv_stats.bytes_used)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(kvs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_generate_with_quantized_pruning_reports_kv_stats(inference: KilnClient) -> None:
    prompt = "the weather in Paris is fine and 12 + 30 = 42 so the answer is " * 4
    kv = pb.KVCompression(method="snapkv", budget_fp16_tokens=24, window_size=8)
    request = pb.GenerateRequest(
        request_id="kv1",
        model="tiny",
        prompt=prompt,
        kv=kv,
        sampling=pb.SamplingParams(max_tokens=1),
    )
    complete = list(inference.stub.Generate(request, timeout=60))[-1].complete
    stats = complete.kv_stats
    assert complete.engine == "hf" and stats.method == "snapkv" and stats.bits == 4
    assert stats.bytes_used == stats.bytes_planned < stats.bytes_full
    assert stats.bytes_planned <= 24 * 2 * 1 * 64 * 2 * 2  # 24 fp16 tokens, 2 layers, 1 head
    plan = inference.stub.PlanKV(
        pb.PlanKVRequest(model="tiny", sequence_length=complete.usage.prompt_tokens, kv=kv)
    )
    assert (plan.bits, list(plan.tokens_kept_per_layer), plan.bytes) == (
        stats.bits,
        list(stats.tokens_kept_per_layer),
        stats.bytes_planned,
    )
    assert "tight budget" in plan.reason


@pytest.mark.parametrize(
    "kv,field",
    [
        (pb.KVCompression(method="magic", budget_bytes=10**6), "kv.method"),
        (pb.KVCompression(method="snapkv"), "kv.budget"),
        (pb.KVCompression(method="snapkv", budget_bytes=100), "kv.budget_bytes"),
        (pb.KVCompression(method="snapkv", budget_bytes=10**6, bits=3), "kv.bits"),
        (pb.KVCompression(method="h2o", budget_bytes=10**6, recent_ratio=0), "kv.recent_ratio"),
        (
            pb.KVCompression(method="h2o", budget_bytes=10**6, recent_ratio=float("nan")),
            "kv.recent_ratio",
        ),
    ],
)
def test_bad_kv_is_invalid_argument(inference: KilnClient, kv, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        inference.stub.PlanKV(pb.PlanKVRequest(model="tiny", sequence_length=500, kv=kv))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)
    request = pb.GenerateRequest(request_id="bad-kv", model="tiny", prompt="x " * 200, kv=kv)
    with pytest.raises(grpc.RpcError) as err:
        list(inference.stub.Generate(request, timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_press_setting_comes_from_the_request(inference: KilnClient) -> None:
    """sink_tokens 0 is a setting, not "the default" (StreamingLLM then keeps only recent
    tokens); H2O's recent share reaches the config; unset fields take the defaults."""
    from services.inference.servicer import kv_from_pb

    def plan(kv: pb.KVCompression) -> pb.PlanKVResponse:
        return inference.stub.PlanKV(pb.PlanKVRequest(model="tiny", sequence_length=300, kv=kv))

    budget = {"budget_fp16_tokens": 1.5, "bits": 16}
    assert plan(pb.KVCompression(method="streamingllm", sink_tokens=0, **budget)).tokens_kept == 1
    with pytest.raises(grpc.RpcError) as err:
        plan(pb.KVCompression(method="streamingllm", **budget))  # unset: 4 sinks + 1 recent
    assert err.value.details().startswith("kv.budget_bytes")
    assert "needs at least 5" in err.value.details()
    h2o = kv_from_pb(pb.KVCompression(method="h2o", budget_bytes=1, recent_ratio=0.25))
    assert (h2o.recent_ratio, h2o.sink_tokens) == (0.25, 4)
    assert kv_from_pb(pb.KVCompression(method="h2o", budget_bytes=1)).recent_ratio == 0.5


def test_tool_integrated_generation_over_grpc(grpc_server, redis_url: str) -> None:
    """A scripted model behind the real servicer: its python block runs in the sandbox."""
    from kiln.inference.v1 import inference_pb2_grpc
    from services.inference.registry import LoadedModel, ModelRegistry
    from services.inference.servicer import InferenceServicer
    from services.llm.scripted import ScriptedBackend

    def solver(text: str) -> str:
        if "```output" not in text:
            return "```python\nprint(sum(range(101)))\n```\n```output"
        return "So the sum is 5050."

    registry = ModelRegistry()
    registry.add(
        LoadedModel("solver", "scripted", "scripted", ScriptedBackend(responder=solver), "n/a")
    )

    def registrar(server, settings, jobs):
        servicer = InferenceServicer(settings, jobs, registry)
        inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
        return [pb.DESCRIPTOR.services_by_name["Inference"].full_name]

    settings = Settings(redis_url=redis_url)
    server = grpc_server("inference", settings, registrar)
    with KilnClient("inference", target=server.target, settings=settings) as client:
        request = pb.GenerateRequest(
            request_id="tir",
            model="solver",
            prompt="Sum 0..100?",
            sampling=pb.SamplingParams(max_tokens=200),
            tools=pb.ToolUse(max_rounds=2, timeout_s=5),
        )
        complete = list(client.stub.Generate(request, timeout=60))[-1].complete
        assert complete.tool_rounds == 1
        assert complete.text.endswith("```output\n5050\n```\nSo the sum is 5050.")
        bad = pb.GenerateRequest(
            request_id="tir2", model="solver", prompt="x", tools=pb.ToolUse(max_rounds=99)
        )
        with pytest.raises(grpc.RpcError) as err:
            list(client.stub.Generate(bad, timeout=10))
        assert err.value.details().startswith("tools.max_rounds")


def test_lora_adapter_is_merged_on_load(
    inference: KilnClient, tiny_model: Path, tiny_adapter: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = PeftModel.from_pretrained(base, str(tiny_adapter)).merge_and_unload().eval()
    ids = HFBackend(tiny_model).tokenizer("the answer is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = tuned.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
    for name, fields in (
        ("by-adapter", {"local_path": str(tiny_adapter)}),
        ("by-base", {"local_path": str(tiny_model), "adapters": [str(tiny_adapter)]}),
    ):
        info = inference.stub.LoadModel(pb.LoadModelRequest(name=name, **fields))
        assert list(info.adapters) == [str(tiny_adapter)]
        request = pb.GenerateRequest(
            request_id=name,
            model=name,
            prompt="the answer is",
            sampling=pb.SamplingParams(max_tokens=8),
        )
        done = list(inference.stub.Generate(request, timeout=60))[-1].complete
        assert list(done.token_ids) == expected.tolist()
    base_done = list(
        inference.stub.Generate(
            pb.GenerateRequest(
                request_id="base",
                model="tiny",
                prompt="the answer is",
                sampling=pb.SamplingParams(max_tokens=8),
            ),
            timeout=60,
        )
    )[-1].complete
    assert list(base_done.token_ids) != expected.tolist()
    with pytest.raises(grpc.RpcError) as err:
        inference.stub.LoadModel(
            pb.LoadModelRequest(name="x", local_path=str(tiny_model), adapters=[str(tiny_model)])
        )
    assert err.value.details().startswith("adapters[0]")


def test_a_full_model_refuses_at_once_and_nothing_times_out(
    grpc_server, redis_url: str, tiny_model: Path
) -> None:
    """Admission control over gRPC: one decoding slot and no waiting room. While a long
    generation holds the slot, every other Generate is RESOURCE_EXHAUSTED at once; after it
    is aborted, concurrent calls each succeed or are refused, and none meets its deadline."""
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(redis_url=redis_url, decode_batch=1, max_waiting_generations=0)
    server = grpc_server("inference", settings)
    with KilnClient("inference", target=server.target, settings=settings) as client:
        client.stub.LoadModel(pb.LoadModelRequest(name="tiny", local_path=str(tiny_model)))

        def generate(i: int, max_tokens: int = 8) -> grpc.StatusCode:
            request = pb.GenerateRequest(
                request_id=f"c{i}",
                model="tiny",
                prompt="the answer is",
                sampling=pb.SamplingParams(max_tokens=max_tokens),
            )
            try:
                list(client.stub.Generate(request, timeout=120))
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        long = client.stub.Generate(
            pb.GenerateRequest(
                request_id="long",
                model="tiny",
                prompt="the answer is",
                sampling=pb.SamplingParams(max_tokens=2000),
            ),
            timeout=120,
        )
        next(long)  # it holds the only slot
        with ThreadPoolExecutor(20) as pool:
            held = list(pool.map(generate, range(20)))
        assert held == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 20
        refused = pb.GenerateRequest(request_id="refused", model="tiny", prompt="x")
        with pytest.raises(grpc.RpcError) as err:
            list(client.stub.Generate(refused, timeout=30))
        assert ("kiln-retry-after-ms", "1000") in err.value.trailing_metadata()
        assert client.stub.Abort(pb.AbortRequest(request_id="long")).aborted
        list(long)
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(generate, range(100, 300)))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.OK in codes
