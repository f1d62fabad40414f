"""Celery tasks of the prober service (queue `prober`)."""

from __future__ import annotations

import json
from typing import Any

from services.common.canary import register_canary
from services.common.celery_app import make_celery
from services.common.errors import InvalidInput
from services.common.jobs import JobContext, JobResult, job_task
from services.common.objectstore import ObjectRef
from services.common.settings import get_settings

app = make_celery("prober")
canary = register_canary(app, "prober")


@job_task(app, "kiln.prober.probe")
def probe(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """Probes a JSON Lines dataset; writes trajectories, a summary and an HTML report."""
    from services.llm.remote import RemoteBackend
    from services.prober.core.dataplane import probe_config, probe_dataset
    from services.prober.core.report import html_report
    from services.prober.core.trajectory import summarize

    data = ctx.objects.get_bytes(ObjectRef.from_dict(payload["dataset"]))
    try:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("dataset", f"not JSON Lines: {exc}") from exc
    backend = RemoteBackend(payload["model"], target=get_settings().target("inference"))
    trajectories = probe_dataset(
        backend,
        rows,
        probe_config(payload["step_mode"], payload.get("raw_prompt", False)),
        on_batch=lambda done, total: ctx.report(done, total, f"{done}/{total} items"),
    )
    summary = summarize(trajectories)
    records = [
        {
            "final_answer": t.final_answer,
            "correct": t.correct,
            "early_answer": t.early_answer,
            "mind_changes": t.mind_changes,
            "change_positions": t.change_positions,
            "final_confidence": t.final_confidence,
            "unstable": t.unstable,
            "steps": [
                {
                    "step": s.step,
                    "answer": s.answer,
                    "confidence": s.confidence,
                    "distribution": s.distribution,
                }
                for s in t.steps
            ],
        }
        for t in trajectories
    ]
    refs = [
        ctx.objects.put_jsonl(ctx.output_key("trajectories.jsonl"), records),
        ctx.objects.put_json(ctx.output_key("report.json"), summary),
        ctx.objects.put_bytes(
            ctx.output_key("report.html"),
            html_report(
                f"Chain-of-Probe report: {payload['model']}", summary, rows, trajectories
            ).encode(),
            "text/html",
        ),
    ]
    manifest = ctx.objects.commit(ctx.run_prefix, refs, {"kind": "probe"})
    return JobResult([manifest, *refs], summary)
