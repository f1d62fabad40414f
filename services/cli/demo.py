"""`kiln demo`: the main job on the embedded stack, end to end over gRPC and the queues.

Today it builds a tiny model, loads it into the inference service, streams a generation over
a quantized-pruned KV cache (SnapKV at 4 bits), scores through the `remote` backend, and runs
a canary job on every service's queue (worker -> object store -> manifest), then prints what
each stage produced.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.common.settings import SERVICES


@dataclass
class StageResult:
    stage: str
    produced: str
    where: str
    seconds: float


def run_demo(home: Path, console: Console, keep_running: bool = False) -> list[StageResult]:
    import os

    from services.cli.embedded import down, up
    from services.common.settings import get_settings

    results: list[StageResult] = []
    started = time.perf_counter()
    with console.status("starting the embedded stack (Redis, S3, 5 servers, 5 workers)..."):
        stack = up(home)
    for key, value in stack.env().items():
        os.environ[key] = value
    get_settings.cache_clear()
    results.append(
        StageResult(
            "stack",
            f"5 servers + 5 workers, S3 via {stack.s3_kind}",
            f"{home}/logs",
            time.perf_counter() - started,
        )
    )
    try:
        results += _inference_stage(home, console)
        results += _canary_stage(console)
    finally:
        if not keep_running:
            with console.status("stopping the stack..."):
                down(home)
    return results


def _inference_stage(home: Path, console: Console) -> list[StageResult]:
    from kiln.inference.v1 import inference_pb2 as pb
    from services.common.clients import KilnClient
    from services.llm import SamplingParams
    from services.llm.remote import RemoteBackend
    from services.llm.tiny import build_tiny_model

    t0 = time.perf_counter()
    folder = home / "models" / "tiny-demo"
    if not (folder / "config.json").exists():
        build_tiny_model(folder, seed=0)
    with KilnClient("inference") as client:
        info = client.stub.LoadModel(
            pb.LoadModelRequest(
                request_id=uuid.uuid4().hex, name="tiny-demo", local_path=str(folder)
            ),
            timeout=120,
        )
        request = pb.GenerateRequest(
            request_id=uuid.uuid4().hex,
            model="tiny-demo",
            prompt="the weather in Paris is fine and 12 + 30 = 42 so the answer is " * 8,
            sampling=pb.SamplingParams(max_tokens=24),
            kv=pb.KVCompression(method="snapkv", budget_fp16_tokens=64, window_size=16),
        )
        chunks, complete = 0, None
        for response in client.stub.Generate(request, timeout=120):
            if response.WhichOneof("kind") == "chunk":
                chunks += 1
            else:
                complete = response.complete
        remote = RemoteBackend("tiny-demo", client=client)
        (scores,) = remote.score(["12 + 30 ="], [" 42"])
        _ = remote.generate(["the answer is"], SamplingParams(max_tokens=4))
    console.print(f"[bold]generated[/] ({chunks} chunks): {complete.text!r}")
    console.print(f"[dim]KV plan: {complete.kv_stats.reason}[/]")
    kv = complete.kv_stats
    return [
        StageResult(
            "inference",
            f"{info.parameters:,}-parameter model; "
            f"{complete.usage.completion_tokens} tokens streamed over a {kv.method} "
            f"{kv.bits}-bit KV cache holding {kv.bytes_used:,} of {kv.bytes_full:,} bytes "
            f"({1 - kv.bytes_used / kv.bytes_full:.0%} saved); log p(' 42') = {scores.total:.2f}",
            f"model {folder}",
            time.perf_counter() - t0,
        )
    ]


def _canary_stage(console: Console) -> list[StageResult]:
    from kiln.common.v1 import common_pb2
    from services.common.clients import KilnClient

    results = []
    for service in SERVICES:
        t0 = time.perf_counter()
        with KilnClient(service) as client:
            job = client.jobs.SubmitCanary(
                common_pb2.SubmitCanaryRequest(
                    request_id=uuid.uuid4().hex, shards=3, shard_seconds=0.1
                )
            )
            *_, final = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=120)
        state = common_pb2.JobState.Name(final.state).removeprefix("JOB_STATE_")
        if final.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"{service} canary job {job.id} ended {state}: {final.error}")
        (manifest,) = final.outputs
        results.append(
            StageResult(
                f"{service} queue",
                f"canary job {state}, 3 shards",
                f"s3://{manifest.bucket}/{manifest.key}",
                time.perf_counter() - t0,
            )
        )
    return results


def summary_table(results: list[StageResult]) -> Table:
    table = Table("stage", "produced", "where", "seconds", title="kiln demo")
    for r in results:
        table.add_row(r.stage, r.produced, r.where, f"{r.seconds:.1f}")
    return table
