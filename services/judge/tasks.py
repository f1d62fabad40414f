"""Celery tasks of the judge service (queue `judge`). LLM calls go through the shared Redis
response cache, so a redelivered job replays the calls it had finished at no cost."""

from __future__ import annotations

from typing import Any

from services.common.canary import register_canary
from services.common.celery_app import make_celery
from services.common.errors import InvalidInput
from services.common.jobs import JobContext, JobResult, job_task
from services.common.objectstore import ObjectRef
from services.common.settings import get_settings

app = make_celery("judge")
canary = register_canary(app, "judge")


@job_task(app, "kiln.judge.evaluate")
def evaluate(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """Judges a pair dataset; writes per-item judgments and the reliability report (and, with
    distill, the CCE judgments as the SFT set datasets/judge-distill/<job id>/)."""
    from services.judge.core.crowd_sampling import distillation_rows
    from services.judge.core.dataplane import JudgeSpec, build_strategy, make_context
    from services.judge.core.datasets import load_pairs, parse_file
    from services.judge.core.evaluation import evaluate, report
    from services.judge.core.metrics import accuracy
    from services.llm.runtime import backend_factory, response_cache

    settings = get_settings()
    spec = JudgeSpec(**payload["spec"]).validate()
    items = load_pairs(parse_file(ctx.objects.get_bytes(ObjectRef.from_dict(payload["dataset"]))))
    if payload["limit"]:
        items = items[: payload["limit"]]
    judge = make_context(spec, backend_factory(settings, spec.backend), response_cache(settings))

    def progress(results: list) -> None:
        done = zip(items[: len(results)], results, strict=True)
        labeled = [(it.label, r.verdict) for it, r in done if it.label is not None]
        metrics = {"calls": judge.usage.calls, "cached_calls": judge.usage.cached_calls}
        if labeled:
            labels, verdicts = zip(*labeled, strict=True)
            so_far = accuracy(list(verdicts), list(labels))["accuracy"]
            if so_far is not None:  # undefined until a verdict parses
                metrics["accuracy"] = so_far
        ctx.report(len(results), len(items), f"{len(results)}/{len(items)} pairs", metrics)

    results = evaluate(
        build_strategy(judge, spec),
        items,
        spec.both_orders,
        spec.combine,
        payload["batch_size"],
        progress,
    )
    summary = report(items, results, judge.usage)
    summary["strategy"] = spec.strategy
    records = [r.record(i, it) for i, (it, r) in enumerate(zip(items, results, strict=True))]
    outputs = ctx.objects.commit_files(
        ctx.run_prefix,
        {"judgments.jsonl": records, "report.json": summary},
        {"kind": "judge-evaluation"},
    )
    if payload["distill"]:
        rows = distillation_rows(items, results, spec.verdict_format)
        prefix = f"datasets/judge-distill/{ctx.job_id}"
        outputs += ctx.objects.commit_files(prefix, {"data.jsonl": rows}, {"kind": "judge-distill"})
        summary["distill_rows"] = len(rows)
        summary["distill_dataset"] = f"{prefix}/data.jsonl"
    return JobResult(outputs, summary)


def _prompts(data: bytes) -> list[str]:
    from services.judge.core.datasets import parse_file

    rows = parse_file(data, "prompts")
    rows = rows if isinstance(rows, list) else [rows]
    prompts = []
    for i, row in enumerate(rows):
        text = row.get("prompt", row.get("instruction")) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"prompts[{i}]", "needs a non-empty 'prompt' (or 'instruction')")
        prompts.append(text)
    if not prompts:
        raise InvalidInput("prompts", "no prompts")
    return prompts


@job_task(app, "kiln.judge.crowd_sampling")
def crowd_sampling(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    """Crowd rejection sampling: the policies answer each prompt, the judge picks the best by
    Copeland score; writes the SFT set (data.jsonl, messages rows), DPO pairs (pairs.jsonl)
    and every scored answer (selections.jsonl) as datasets/<name>/<job id>/."""
    from services.judge.core.crowd_sampling import (
        SamplingConfig,
        crowd_rejection_sampling,
        preference_rows,
        sft_rows,
    )
    from services.judge.core.dataplane import JudgeSpec, build_strategy, make_context
    from services.llm.runtime import backend_factory, response_cache

    settings = get_settings()
    spec = JudgeSpec(**payload["spec"]).validate()
    prompts = _prompts(ctx.objects.get_bytes(ObjectRef.from_dict(payload["prompts"])))
    judge = make_context(spec, backend_factory(settings, spec.backend), response_cache(settings))
    selections = crowd_rejection_sampling(
        judge,
        build_strategy(judge, spec),
        prompts,
        payload["policies"],
        SamplingConfig(seed=spec.seed, **payload["sampling"]),
        spec.combine,
        on_progress=lambda done, total: ctx.report(done, total, f"{done}/{total} prompts"),
    )
    sft, pairs = sft_rows(selections), preference_rows(selections)
    prefix = f"datasets/{payload['dataset_name']}/{ctx.job_id}"
    wins = {p: 0 for p in payload["policies"]}
    for s in selections:
        wins[s.policies[s.best]] += 1
    outputs = ctx.objects.commit_files(
        prefix,
        {
            "data.jsonl": sft,
            "pairs.jsonl": pairs,
            "selections.jsonl": [s.record() for s in selections],
        },
        {"kind": "crowd-sampling", "rows": len(sft)},
    )
    judgments = sum(s.judgments for s in selections)
    summary = {
        "parse_rate": sum(s.parsed for s in selections) / judgments if judgments else None,
        "rows": len(sft),
        "pairs": len(pairs),
        "dataset": f"{prefix}/data.jsonl",
        "chosen_by_policy": wins,
        "calls": judge.usage.calls,
        "cached_calls": judge.usage.cached_calls,
    }
    return JobResult(outputs, summary)
