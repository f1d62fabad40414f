"""Load on the embedded stack (real servers, Redis and S3 as local processes): hundreds of
concurrent Generate calls (half over a 4-bit SnapKV cache) and Judge calls (vanilla, both
orders, the judge model served by inference through the remote backend) on the tiny model.
Prints latency percentiles, errors by status code, throughput against the same calls sent one
at a time (the baseline), and the inference and judge servers' resident memory before, at
peak and after. Run `python -m benchmarks.load [--calls 300] [--concurrency 150]`."""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

console = Console(width=120)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Samples the resident memory of some processes every 0.2 s in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids, self.peak = pids, {name: rss_mib(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mib(pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_calls(call: Callable[[int], None], calls: int, concurrency: int) -> tuple[list, Counter]:
    """Runs call(i) for i < calls on `concurrency` threads; (latencies of the successes in
    seconds, status codes of all)."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        start = time.perf_counter()
        try:
            call(i)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        with lock:
            codes[code] += 1
            if code == "OK":
                latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(calls)))
    return latencies, codes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls per RPC under load")
    parser.add_argument("--concurrency", type=int, default=150)
    parser.add_argument("--baseline-calls", type=int, default=20, help="sequential calls")
    args = parser.parse_args()

    from kiln.inference.v1 import inference_pb2 as ipb
    from kiln.judge.v1 import judge_pb2 as jpb
    from services.cli.embedded import down, free_port, up
    from services.common.clients import KilnClient
    from services.common.settings import SERVICES, get_settings
    from services.llm.tiny import build_tiny_model

    home = Path(tempfile.mkdtemp(prefix="kiln-load-"))
    for service in SERVICES:
        os.environ[f"KILN_{service.upper()}_PORT"] = str(free_port())
    os.environ["KILN_HOME"] = str(home)
    get_settings.cache_clear()
    with console.status("starting the embedded stack..."):
        stack = up(home)
    os.environ.update(stack.env())
    get_settings.cache_clear()
    try:
        build_tiny_model(home / "tiny", seed=0)
        servers = {
            p.name: p.pid for p in stack.procs if p.name in ("inference-server", "judge-server")
        }
        inference = KilnClient("inference", deadline_s=600)
        judge = KilnClient("judge", deadline_s=600)
        inference.stub.LoadModel(ipb.LoadModelRequest(name="tiny", local_path=str(home / "tiny")))

        def generate(i: int) -> None:
            kv = ipb.KVCompression(method="snapkv", bits=4, budget_fp16_tokens=32)
            request = ipb.GenerateRequest(
                request_id=uuid.uuid4().hex,
                model="tiny",
                prompt=f"request {i}: the weather in Paris is fine and " * 6,
                sampling=ipb.SamplingParams(max_tokens=16, temperature=0.7, seed=i),
                kv=kv if i % 2 else None,
            )
            for _ in inference.stub.Generate(request, timeout=600):
                pass

        def judge_pair(i: int) -> None:
            judge.stub.Judge(
                jpb.JudgeRequest(
                    request_id=uuid.uuid4().hex,
                    instruction=f"Question {i}: what is {i} + 1?",
                    response_a=f"It is {i + 1}.",
                    response_b=f"It is {i + 2}.",
                    config=jpb.JudgeConfig(model="tiny", strategy="vanilla", max_tokens=16, seed=i),
                ),
                timeout=600,
            )

        generate(0), judge_pair(0)  # warm up: weights in memory, first-call paths
        table = Table(
            "rpc",
            "mode",
            "calls",
            "errors",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "calls/s",
            "ratio",
        )
        memory = Table("server", "RSS before MiB", "peak MiB", "after MiB")
        before = {name: rss_mib(pid) for name, pid in servers.items()}
        with PeakMemory(servers) as peak:
            for name, call in (("Generate", generate), ("Judge", judge_pair)):
                rows = []
                for mode, calls, concurrency in (
                    ("sequential", args.baseline_calls, 1),
                    (f"{args.concurrency} concurrent", args.calls, args.concurrency),
                ):
                    start = time.perf_counter()
                    latencies, codes = run_calls(call, calls, concurrency)
                    seconds = time.perf_counter() - start
                    rows.append((mode, calls, codes, latencies, len(latencies) / seconds))
                base_rate = rows[0][4]
                for mode, calls, codes, latencies, rate in rows:
                    errors = ", ".join(f"{c} {n}" for c, n in codes.items() if c != "OK") or "0"
                    ms = [1e3 * percentile(latencies, q) for q in (0.5, 0.9, 0.99, 1.0)]
                    table.add_row(
                        name,
                        mode,
                        str(calls),
                        errors,
                        *(f"{v:.0f}" for v in ms),
                        f"{rate:.1f}",
                        f"{rate / base_rate:.2f}x",
                    )
        for name, pid in servers.items():
            memory.add_row(
                name, f"{before[name]:.0f}", f"{peak.peak[name]:.0f}", f"{rss_mib(pid):.0f}"
            )
        console.print(table)
        console.print(memory)
        console.print(f"[dim]{os.cpu_count()} CPUs, tiny model, 16 new tokens per generation[/]")
        inference.close()
        judge.close()
    finally:
        down(home)


if __name__ == "__main__":
    main()
