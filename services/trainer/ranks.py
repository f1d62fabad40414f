"""The processes of a distributed training run on this node.

The Celery task is rank 0: it reports progress, writes checkpoints and is the one a
cancellation or a worker death reaches. Ranks 1..N-1 are `python -m services.trainer.ranks
SPEC` subprocesses that rebuild the same examples, model and (when resuming) checkpoint, and
train in step with rank 0 over one torch.distributed group (gloo on CPU, NCCL on GPU). They
write nothing (with FSDP they take part in gathering each checkpoint's state); they end with
rank 0's last step, and are killed with the task.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.trainer.core.training import TrainConfig


@contextmanager
def helper_ranks(
    config: TrainConfig, base_folder: Path, rows: Sequence[dict[str, Any]], work_dir: Path
) -> Iterator[Any]:
    """Yields join_group for core.runs.run_training; stops the helper ranks on exit."""
    from services.common.server import free_port
    from services.trainer.core.distributed import init_process_group

    helpers: list[subprocess.Popen] = []

    def join_group(resumed_folder: Path | None) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        rows_path = work_dir / "rows.jsonl"
        rows_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        spec = {
            "config": config.to_dict(),
            "base_folder": str(base_folder),
            "rows": str(rows_path),
            "resumed_folder": str(resumed_folder) if resumed_folder else None,
            "port": port,
        }
        spec_path = work_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for rank in range(1, config.world_size):
            with (work_dir / f"rank-{rank}.log").open("ab") as log:  # the child keeps its copy
                helpers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "services.trainer.ranks", str(spec_path), str(rank)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent,
                    )
                )
        init_process_group(0, config.world_size, "127.0.0.1", port)

    import torch.distributed as dist

    try:
        yield join_group
    except BaseException:  # the helpers wait in a collective that rank 0 will never reach
        for helper in helpers:
            helper.kill()
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for helper in helpers:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()


def _die_with_parent() -> None:
    """In the child: SIGKILL when rank 0's process dies (a killed worker takes its ranks)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_rank(spec_path: Path, rank: int) -> None:
    """One helper rank: the same examples, model and checkpoint as rank 0, trained in step."""
    import torch.distributed as dist

    from services.trainer.checkpoints import load_checkpoint_folder
    from services.trainer.core.distributed import init_process_group
    from services.trainer.runs import build_trainer

    spec = json.loads(spec_path.read_text())
    values = dict(spec["config"])
    objective = values.pop("objective")
    config = TrainConfig.from_hyperparameters(objective, values)
    rows = [json.loads(line) for line in Path(spec["rows"]).read_text().splitlines()]
    trainer = build_trainer(Path(spec["base_folder"]), rows, config, rank)
    if spec["resumed_folder"]:
        trainer.load_state_dict(load_checkpoint_folder(Path(spec["resumed_folder"]), trainer.model))
    init_process_group(rank, config.world_size, "127.0.0.1", spec["port"])
    if config.fsdp:
        trainer.shard()

    def gather_for_checkpoint(_: object) -> None:
        if trainer.sharded and trainer.saves_now():  # rank 0 gathers the same, and writes
            trainer.trainable_state()
            trainer.state_dict()

    try:
        trainer.run(gather_for_checkpoint)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(Path(sys.argv[1]), int(sys.argv[2]))
