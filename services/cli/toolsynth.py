"""`kiln toolsynth ...`: grade tool calls (BFCL) and synthesize tool-calling data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from services.cli.app import (
    BACKEND,
    SET_OPTION,
    apply_stack_env,
    console,
    dataset_ref,
    parse_sets,
    request_id,
    submit_and_follow,
)

app = typer.Typer(help="Tool-calling data: grading and synthesis.", no_args_is_help=True)


def _json_rows(path: Path) -> list[dict]:
    import json

    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@app.command("grade")
def toolsynth_grade(
    questions: Path = typer.Argument(..., help="BFCL questions (JSON Lines: id, function)"),
    answers: Path = typer.Argument(..., help="BFCL possible answers (id, ground_truth)"),
    calls: Path = typer.Option(..., "--calls", help="model results (JSON Lines: id, result)"),
) -> None:
    """Grade model calls with BFCL's checker semantics: accuracy and counts per error code."""
    from services.toolsynth.core.grader import grade_dataset

    result = grade_dataset(_json_rows(questions), _json_rows(answers), _json_rows(calls))
    table = Table("category", "correct", "graded", "accuracy")
    for category, (correct, graded) in sorted(result.by_category.items()):
        table.add_row(category, str(correct), str(graded), f"{correct / graded:.3f}")
    table.add_row("all", str(result.correct), str(result.graded), f"{result.accuracy:.3f}")
    console.print(table)
    if result.errors:
        errors = Table("error", "count")
        for code, count in sorted(result.errors.items(), key=lambda kv: -kv[1]):
            errors.add_row(code, str(count))
        console.print(errors)
    if result.missing:
        console.print(f"{len(result.missing)} questions have no result, e.g. {result.missing[0]}")


@app.command("run")
def toolsynth_run(
    count: int = typer.Option(16, help="dialogs to keep"),
    tools: str = typer.Option(
        "",
        help="tools (OpenAI/BFCL JSON or JSON Lines): a file or "
        "object key; none: a self-evolved API pool",
    ),
    model: str = typer.Option("", "--model", "-m", help="the agents' model (on inference)"),
    mix: list[str] = typer.Option(None, "--mix", help="type=share, e.g. parallel=2"),
    seed: int = typer.Option(0),
    backend: str = BACKEND,
    export_format: str = typer.Option("openai", "--format", help="openai|hermes|sharegpt|toolace"),
    benchmark_tools: str = typer.Option("", "--benchmark-tools", help="tools to decontaminate"),
    out: str = typer.Option("toolsynth", "--out", help="output dataset name"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Synthesize verified tool-calling dialogs as a job (ToolACE + ToolFlow); prints the
    per-stage verification counts and the dataset's key."""
    import json

    from kiln.toolsynth.v1 import toolsynth_pb2 as pb
    from services.common.protobuf import struct_from_dict

    apply_stack_env()
    shares = {}
    for item in mix or []:
        name, _, share = item.partition("=")
        try:
            shares[name] = float(share)
        except ValueError:
            raise typer.BadParameter(f"--mix {item!r} is not type=share") from None
    request = pb.SynthesisRequest(
        request_id=request_id(),
        count=count,
        seed=seed,
        dialog_mix=shares,
        model=model,
        dataset_name=out,
        parameters=struct_from_dict(parse_sets(sets)),
        backend=backend,
        export_format=export_format,
    )
    if tools:
        request.tools.CopyFrom(dataset_ref(tools, "--tools"))
    if benchmark_tools:
        request.benchmark_tools.CopyFrom(dataset_ref(benchmark_tools, "--benchmark-tools"))
    final = submit_and_follow("toolsynth", lambda client: client.stub.SubmitSynthesis(request))
    from google.protobuf import json_format

    from services.common.objectstore import ObjectStore

    summary = json_format.MessageToDict(final.summary)
    prefix = summary["dataset"].rsplit("/", 1)[0]
    stats = ObjectStore().get_json(f"{prefix}/stats.json")
    table = Table("stage", "passed", "failed", "errors")
    for stage in ("generation", "rules", "model"):
        if stage in stats:
            s = stats[stage]
            errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items())
            table.add_row(stage, str(s["passed"]), str(s["failed"]), errors)
    console.print(table)
    console.print_json(json.dumps(summary))
