"""The processes of a distributed training run, on one node or several.

The Celery task is rank 0: it reports progress, writes checkpoints and is the one a
cancellation or a worker death reaches. It writes the run's spec (config, base model, the rows
and the checkpoint it resumes from) to the object store, starts ranks 1..P-1 of its own node as
`python -m services.trainer.ranks SPEC RANK` subprocesses, and, for a run over N nodes, sends
one `kiln.trainer.node` task per other node to the trainer queue: the trainer worker that takes
it starts that node's P ranks the same way. Every rank rebuilds the same examples, model and
checkpoint from the spec and trains in step with rank 0 over one torch.distributed group (gloo
on CPU, NCCL on GPU) whose address is rank 0's: KILN_TRAIN_MASTER_ADDR, or this host's address
for a multi-node run. Ranks write nothing (with FSDP they take part in gathering each
checkpoint's state); they end with rank 0's last step. Rank 0's node's ranks die with it; a
node task's ranks end when rank 0's group goes away.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.common.errors import Unavailable
from services.common.objectstore import ObjectRef, ObjectStore
from services.common.settings import Settings
from services.trainer.core.training import TrainConfig

log = logging.getLogger(__name__)


def master_address(config: TrainConfig, settings: Settings) -> str:
    """Where every rank reaches rank 0: KILN_TRAIN_MASTER_ADDR, else loopback for one node
    and this host's address for several."""
    if settings.train_master_addr:
        return settings.train_master_addr
    return "127.0.0.1" if config.nodes == 1 else socket.gethostbyname(socket.gethostname())


@contextmanager
def helper_ranks(
    config: TrainConfig,
    base_source: str,
    rows: Sequence[dict[str, Any]],
    objects: ObjectStore,
    prefix: str,
    settings: Settings,
    send_node_task: Any = None,
) -> Iterator[Any]:
    """Yields join_group for runs.run_training; stops this node's helper ranks on exit.

    prefix: where the spec and rows go (the job's runs/<job_id>); send_node_task(spec_key,
    node): sends the node task of each other node of a multi-node run."""
    from services.common.server import free_port
    from services.trainer.core.distributed import init_process_group

    helpers: list[subprocess.Popen] = []
    wrote_spec = False

    def join_group(resumed_prefix: str | None) -> None:
        nonlocal wrote_spec
        wrote_spec = True
        address = master_address(config, settings)
        port = free_port()
        rows_ref = objects.put_jsonl(f"{prefix}/ranks/rows.jsonl", list(rows))
        spec = {
            "config": config.to_dict(),
            "base_source": base_source,
            "rows": rows_ref.to_dict(),
            "resumed_prefix": resumed_prefix,
            "address": address,
            "port": port,
        }
        spec_key = objects.put_json(f"{prefix}/ranks/spec-{port}.json", spec).key
        helpers.extend(start_ranks(spec_key, range(1, config.ranks_per_node), settings))
        for node in range(1, config.nodes):
            send_node_task(spec_key, node)
        init_process_group(0, config.world_size, address, port)

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
        if wrote_spec:  # every rank read it before the group formed
            _remove_specs(objects, f"{prefix}/ranks/")


def _remove_specs(objects: ObjectStore, prefix: str) -> None:
    """Deletes a run's specs and rows. An unreachable store is logged, not raised over the
    run's own outcome; any other S3 error (access denied) is raised like every store call's."""
    try:
        objects.remove_prefix(prefix)
    except Unavailable as exc:
        log.warning("could not remove %s: %s", prefix, exc)


def start_ranks(spec_key: str, ranks: range, settings: Settings) -> list[subprocess.Popen]:
    """`python -m services.trainer.ranks` for each rank, dying with this process, logging to
    <cache>/ranks/<spec>/rank-<k>.log."""
    log_dir = settings.effective_cache_dir / "ranks" / Path(spec_key).parent.parent.name
    log_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for rank in ranks:
        with (log_dir / f"rank-{rank}.log").open("ab") as log:  # the child keeps its copy
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.trainer.ranks", spec_key, str(rank)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            )
    return started


def run_node(spec_key: str, node: int, settings: Settings) -> list[int]:
    """A node task: starts node `node`'s ranks and waits for them; returns their exit codes."""
    spec = ObjectStore(settings).get_json(spec_key)
    per_node = TrainConfig.from_dict(spec["config"]).ranks_per_node
    ranks = start_ranks(spec_key, range(node * per_node, (node + 1) * per_node), settings)
    return [rank.wait() for rank in ranks]


def _die_with_parent() -> None:
    """In the child: SIGKILL when its parent dies (a killed worker takes its ranks)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_rank(spec_key: str, rank: int) -> None:
    """One helper rank: the same examples, model and checkpoint as rank 0, trained in step."""
    import torch.distributed as dist

    from services.common.models import fetch_source
    from services.common.settings import get_settings
    from services.trainer.checkpoints import restore_checkpoint
    from services.trainer.core.distributed import init_process_group
    from services.trainer.runs import build_trainer

    settings = get_settings()
    objects = ObjectStore(settings)
    spec = objects.get_json(spec_key)
    config = TrainConfig.from_dict(spec["config"])
    rows = objects.get_jsonl(ObjectRef.from_dict(spec["rows"]).key)
    base = fetch_source(spec["base_source"], "base_model", settings)
    trainer = build_trainer(base, rows, config, rank)
    if spec["resumed_prefix"]:
        state = restore_checkpoint(
            objects, spec["resumed_prefix"], trainer.model, settings.effective_cache_dir
        )
        trainer.load_state_dict(state)
    init_process_group(rank, config.world_size, spec["address"], spec["port"])
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
    run_rank(sys.argv[1], int(sys.argv[2]))
