"""Celery tasks of the trainer service (queue `trainer`)."""

from __future__ import annotations

from typing import Any

from services.common.canary import register_canary
from services.common.celery_app import make_celery
from services.common.jobs import JobContext, JobResult, job_task
from services.common.objectstore import ObjectRef
from services.common.settings import get_settings

app = make_celery("trainer")
canary = register_canary(app, "trainer")


def read_dataset(ctx: JobContext, ref: dict[str, Any], field: str) -> list[dict[str, Any]]:
    from services.trainer.core.data import read_rows

    return read_rows(ctx.objects.get_bytes(ObjectRef.from_dict(ref)), field)


@job_task(app, "kiln.trainer.train")
def train(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """LoRA training to checkpoints/<run>/<step>; resumes from the run's latest checkpoint."""
    from services.common.models import fetch_source
    from services.trainer.core.training import TrainConfig
    from services.trainer.ranks import helper_ranks
    from services.trainer.runs import run_fingerprint, run_training

    settings = get_settings()
    config_values = dict(payload["config"])
    objective = config_values.pop("objective")
    config_values.setdefault("world_size", settings.train_devices)
    config_values.setdefault("nodes", settings.train_nodes)
    config = TrainConfig.from_hyperparameters(objective, config_values)
    rows = [
        row
        for i, ref in enumerate(payload["datasets"])
        for row in read_dataset(ctx, ref, f"datasets[{i}]")
    ]
    base_source = payload["base_model"]
    base_folder = fetch_source(base_source, "base_model", settings)
    fingerprint = run_fingerprint(config, base_source, [r["sha256"] for r in payload["datasets"]])

    def on_step(result: Any, total: int) -> None:
        ctx.report(result.step, total, f"step {result.step}/{total}", result.report())

    ranks = helper_ranks(
        config,
        base_source,
        rows,
        ctx.objects,
        ctx.run_prefix,
        settings,
        lambda spec_key, node_rank: app.send_task(
            "kiln.trainer.node", args=[spec_key, node_rank], queue="trainer"
        ),
    )
    with ranks as join_group:
        outcome = run_training(
            ctx.objects,
            payload["run_name"],
            base_source,
            base_folder,
            rows,
            config,
            fingerprint,
            settings.effective_cache_dir,
            on_step,
            join_group,
        )
    metrics = ctx.objects.put_jsonl(ctx.output_key("metrics.jsonl"), outcome.history)
    summary = outcome.summary()
    manifest = ctx.objects.commit(ctx.run_prefix, [metrics], {"kind": "train", **summary})
    return JobResult([manifest, metrics, *(c.manifest for c in outcome.checkpoints)], summary)


@app.task(name="kiln.trainer.node")
def node(spec_key: str, node_rank: int) -> list[int]:
    """The ranks of one more node of a multi-node training run (sent by its rank 0): not a
    job of its own; it ends when they do and is not redelivered (a lost node fails the run)."""
    from services.trainer.ranks import run_node

    return run_node(spec_key, node_rank, get_settings())


@job_task(app, "kiln.trainer.prepare")
def prepare(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """RISE pairs, TATA selection or BMC bridging through the inference service, written as
    the committed dataset datasets/<output_name>/<job id>/."""
    from kiln.inference.v1 import inference_pb2
    from services.llm.remote import RemoteBackend
    from services.trainer.core.prepare import prepare as run_prepare
    from services.trainer.core.prepare import prepare_config

    method = payload["method"]
    config = prepare_config(method, payload["parameters"])
    rows = read_dataset(ctx, payload["dataset"], "dataset")
    target = get_settings().target("inference")
    backend = RemoteBackend(payload["model"], target=target)
    tir_backend = RemoteBackend(
        payload["model"], target=target, tools=inference_pb2.ToolUse(max_rounds=4)
    )
    out, stats = run_prepare(
        method,
        config,
        rows,
        backend,
        tir_backend,
        on_progress=lambda done, total, message: ctx.report(done, total, message),
    )
    prefix = f"datasets/{payload['output_name']}/{ctx.job_id}"
    outputs = ctx.objects.commit_files(
        prefix, {"data.jsonl": out, "stats.json": stats}, {"kind": method, "rows": len(out)}
    )
    return JobResult(
        outputs,
        {
            "rows": len(out),
            "dataset": outputs[1].key,
            **{k: v for k, v in stats.items() if isinstance(v, (int, float))},
        },
    )
