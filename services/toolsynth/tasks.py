"""Celery tasks of the toolsynth service (queue `toolsynth`). Agent calls go through the shared
Redis response cache, so a redelivered or repeated job replays its finished calls for free
and, with the same seed, writes the same dataset byte for byte."""

from __future__ import annotations

from typing import Any

from services.common.canary import register_canary
from services.common.celery_app import make_celery
from services.common.jobs import JobContext, JobResult, job_task
from services.common.objectstore import ObjectRef
from services.common.settings import get_settings

app = make_celery("toolsynth")
canary = register_canary(app, "toolsynth")


@job_task(app, "kiln.toolsynth.synthesize")
def synthesize(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """Synthesizes, verifies and selects dialogs; commits datasets/<name>/<job id>/ with
    data.jsonl (the export format), dialogs.jsonl (kiln's format), tools.jsonl, stats.json
    and rejected.jsonl (every rejected attempt with its error codes)."""
    from services.common.embeddings import default_encoder
    from services.llm.base import Usage
    from services.llm.cache import CachingBackend
    from services.llm.runtime import backend_factory, response_cache
    from services.toolsynth.core.formats import EXPORTERS
    from services.toolsynth.core.spec import SynthesisSpec, parse_tools
    from services.toolsynth.core.synthesis import synthesize as run

    settings = get_settings()
    spec = SynthesisSpec(**payload["spec"]).validate()
    synthesis, agents, pool, complexity = spec.configs

    def tools_at(name: str) -> list:
        ref = payload.get(name)
        return parse_tools(ctx.objects.get_bytes(ObjectRef.from_dict(ref)), name) if ref else []

    usage = Usage()
    backend = None
    if spec.needs_model():
        inner = backend_factory(settings, spec.backend, where="")(spec.model)
        backend = CachingBackend(inner, response_cache(settings), usage)
    result = run(
        spec.mix,
        synthesis,
        agents,
        default_encoder().encode,
        backend,
        tools_at("tools") or None,
        pool,
        complexity,
        tools_at("benchmark_tools"),
        on_progress=ctx.report,
    )
    export = EXPORTERS[spec.export_format]
    prefix = f"datasets/{payload['dataset_name']}/{ctx.job_id}"
    outputs = ctx.objects.commit_files(
        prefix,
        {
            "data.jsonl": [export(d) for d in result.dialogs],
            "dialogs.jsonl": [d.to_dict() for d in result.dialogs],
            "tools.jsonl": [t.to_dict() for t in result.tools],
            "stats.json": result.stats,
            "rejected.jsonl": result.rejected,
        },
        {"kind": "toolsynth", "rows": len(result.dialogs), "format": spec.export_format},
    )
    summary = {
        "dialogs": len(result.dialogs),
        "requested": spec.count,
        "dataset": f"{prefix}/data.jsonl",
        "rejected_attempts": len(result.rejected),
        "calls": usage.calls,
        "cached_calls": usage.cached_calls,
        "mix": {t: m["achieved"] for t, m in result.stats["quality"]["mix"].items()},
    }
    return JobResult(outputs, summary)
