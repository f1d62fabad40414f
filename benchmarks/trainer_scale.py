"""The trainer at scale on SmolLM2-135M-Instruct (LoRA SFT, fp32 weights), each row against
its baseline in the same run:

1. packed vs padded SFT on a skewed length mix (most examples short, a few long): training
   tokens per second (tokens that carry a loss or attention, not padding);
2. 2 processes (gloo, one thread each) vs 1 process (two threads) on the same global batch;
3. gradient accumulation (4 micro-batches of 2) vs one batch of 8: step time;
4. 2 processes with FSDP (weights sharded, gathered a layer at a time) vs 2 data-parallel.

    python benchmarks/trainer_scale.py [--steps 4]

On a 2-core machine row 2 measures how two processes share two cores, not a speed-up a
second device would bring: read it as the cost of the collective, honestly reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp
from rich.console import Console
from rich.table import Table

from services.llm.smollm2 import MODEL_NAME, build_smollm2
from services.trainer.core.training import TrainConfig
from services.trainer.runs import build_trainer

WORDS = [
    "river",
    "stone",
    "cloud",
    "apple",
    "light",
    "table",
    "green",
    "seven",
    "music",
    "window",
    "paper",
    "garden",
]


def skewed_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Seven in eight examples of 8-20 words, one in eight of 120-160."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = rng.randint(120, 160) if i % 8 == 7 else rng.randint(8, 20)
        out.append(
            {
                "prompt": "Repeat after me:",
                "completion": " ".join(rng.choice(WORDS) for _ in range(words)),
            }
        )
    return out


def timed_steps(folder: Path, config: TrainConfig, data: list[dict], rank: int = 0) -> list:
    trainer = build_trainer(folder, data, config, rank)
    if config.fsdp:
        trainer.shard()
    return [trainer.train_step() for _ in range(config.max_steps)]


def rate(results: list) -> tuple[float, float]:
    """(tokens/s over the steps after the first, median step seconds)."""
    kept = results[1:] or results
    return sum(r.tokens for r in kept) / sum(r.seconds for r in kept), statistics.median(
        r.seconds for r in kept
    )


def _rank(rank: int, folder: str, port: int, config: TrainConfig, data: list, out: str) -> None:
    from services.trainer.core.distributed import init_process_group

    torch.set_num_threads(1)
    init_process_group(rank, 2, "127.0.0.1", port)
    results = timed_steps(Path(folder), config, data, rank)
    if rank == 0:
        torch.save([(r.tokens, r.seconds) for r in results], out)
    torch.distributed.destroy_process_group()


def two_processes(folder: Path, config: TrainConfig, data: list) -> tuple[float, float]:
    from services.cli.embedded import free_port

    out = Path(tempfile.mkdtemp()) / "rank0.pt"
    mp.spawn(_rank, args=(str(folder), free_port(), config, data, str(out)), nprocs=2, join=True)
    pairs = torch.load(out)[1:]
    return sum(t for t, _ in pairs) / sum(s for _, s in pairs), statistics.median(
        s for _, s in pairs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    from services.common.settings import get_settings

    folder = get_settings().effective_models_dir / MODEL_NAME
    build_smollm2(folder)
    data = skewed_rows(64)
    base = TrainConfig.from_hyperparameters(
        "sft", {"max_steps": args.steps, "batch_size": 8, "max_length": 256, "lora_r": 8}
    )
    threads = torch.get_num_threads()
    padded = rate(timed_steps(folder, base, data))
    packed = rate(timed_steps(folder, dataclasses.replace(base, packing=True), data))
    one = padded
    data_parallel = dataclasses.replace(base, batch_size=4, world_size=2)
    two = two_processes(folder, data_parallel, data)
    sharded = two_processes(folder, dataclasses.replace(data_parallel, fsdp=True), data)
    accumulated = rate(
        timed_steps(
            folder, dataclasses.replace(base, batch_size=2, gradient_accumulation_steps=4), data
        )
    )
    console = Console()
    console.print(
        f"SmolLM2-135M-Instruct, LoRA r=8, global batch 8, max_length 256, skewed lengths; "
        f"median of {args.steps - 1} steps after one warm-up; {threads} threads per process "
        f"(1 each with 2 processes)"
    )
    table = Table("comparison", "baseline", "kiln", "ratio")
    table.add_row(
        "SFT tokens/s, packed vs padded",
        f"{padded[0]:,.0f}",
        f"{packed[0]:,.0f}",
        f"{packed[0] / padded[0]:.2f}x",
    )
    table.add_row(
        "SFT tokens/s, 2 gloo processes vs 1 (2 cores)",
        f"{one[0]:,.0f}",
        f"{two[0]:,.0f}",
        f"{two[0] / one[0]:.2f}x",
    )
    table.add_row(
        "step time, accumulation 4 x 2 vs batch 8",
        f"{padded[1]:.2f} s",
        f"{accumulated[1]:.2f} s",
        f"{accumulated[1] / padded[1]:.2f}x",
    )
    table.add_row(
        "SFT tokens/s, 2 processes FSDP vs data parallel",
        f"{two[0]:,.0f}",
        f"{sharded[0]:,.0f}",
        f"{sharded[0] / two[0]:.2f}x",
    )
    console.print(table)


if __name__ == "__main__":
    main()
