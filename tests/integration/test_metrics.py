"""Prometheus /metrics of a real server, scraped over HTTP: RPC counts by code, generated
tokens, KV bytes saved (exactly the response's numbers), queue depth from Redis."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2 as pb
from services.cli.embedded import free_port
from services.common.clients import KilnClient
from services.common.settings import Settings

GENERATE = "/kiln.inference.v1.Inference/Generate"
CANARY = "/kiln.common.v1.Jobs/SubmitCanary"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_rpcs_tokens_kv_bytes_and_queue_depth(
    grpc_server, kiln_env: Settings, tiny_model: Path
) -> None:
    settings = kiln_env.model_copy(update={"metrics_port": free_port(), "auth_token": "t0ken"})
    server = grpc_server("inference", settings)
    port = server.server.metrics_port
    assert port == settings.metrics_port
    model = f"m-{uuid.uuid4().hex[:6]}"
    before = scrape(port)

    with KilnClient("inference", target=server.target, settings=settings) as client:
        client.stub.LoadModel(pb.LoadModelRequest(name=model, local_path=str(tiny_model)))
        request = pb.GenerateRequest(
            request_id="g1",
            model=model,
            prompt="the weather in Paris is fine " * 12,
            sampling=pb.SamplingParams(max_tokens=6),
            kv=pb.KVCompression(method="snapkv", bits=4, budget_fp16_tokens=24),
        )
        complete = list(client.stub.Generate(request, timeout=60))[-1].complete
        with pytest.raises(grpc.RpcError) as bad:
            list(client.stub.Generate(pb.GenerateRequest(model=model), timeout=10))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        client.jobs.SubmitCanary(common_pb2.SubmitCanaryRequest(request_id="c1", shards=1))
    with KilnClient("inference", target=server.target, settings=settings, token="") as anon:
        with pytest.raises(grpc.RpcError) as denied:
            list(anon.stub.Generate(request, timeout=10))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

    rpc = "kiln_rpc_requests_total"
    denied = {"service": "inference", "method": GENERATE, "code": "UNAUTHENTICATED"}
    # a stream's status is counted when its handler ends, which may trail the client's error
    for _ in range(100):
        after = scrape(port)
        if value(after, rpc, **denied) > value(before, rpc, **denied):
            break
        time.sleep(0.05)
    for code, count in (("OK", 1), ("INVALID_ARGUMENT", 1), ("UNAUTHENTICATED", 1)):
        labels = {"service": "inference", "method": GENERATE, "code": code}
        assert value(after, rpc, **labels) - value(before, rpc, **labels) == count, code
    latency = {"service": "inference", "method": GENERATE}
    assert (
        value(after, "kiln_rpc_latency_seconds_count", **latency)
        - value(before, "kiln_rpc_latency_seconds_count", **latency)
        == 3
    )

    kv = complete.kv_stats
    assert kv.bytes_used < kv.bytes_full
    assert value(after, "kiln_generated_tokens_total", model=model) == (
        complete.usage.completion_tokens
    )
    assert value(after, "kiln_generation_seconds_total", model=model) > 0
    labels = {"model": model, "method": "snapkv", "bits": "4"}
    assert value(after, "kiln_kv_bytes_full_total", **labels) == kv.bytes_full
    assert value(after, "kiln_kv_bytes_saved_total", **labels) == kv.bytes_full - kv.bytes_used
    # no worker consumes the inference queue in this test: the canary waits in Redis
    assert value(after, "kiln_queue_depth", service="inference") == 1
