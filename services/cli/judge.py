"""`kiln judge ...`: parse verdicts, judge a pair, evaluate a judge, crowd sampling."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from services.cli.app import (
    BACKEND,
    SET_OPTION,
    apply_stack_env,
    connect,
    console,
    dataset_ref,
    parse_sets,
    request_id,
    submit_and_follow,
)

app = typer.Typer(help="LLM-as-a-judge tools.", no_args_is_help=True)


@app.command("parse")
def judge_parse(
    file: Path = typer.Argument(..., help="a judge output (text), or JSON Lines of {text}"),
    fmt: str = typer.Option(
        ..., "--format", help="mtbench | arena_hard | llmbar | json | pointwise"
    ),
    explain: bool = typer.Option(
        False, "--explain", help="also show which rule chose each verdict (final, opening, ...)"
    ),
) -> None:
    """Read the verdict each judge output states; unparseable outputs are listed and counted."""
    import json
    from collections import Counter

    from services.judge.core.verdicts import PARSERS, parse

    if fmt not in PARSERS:
        raise typer.BadParameter(
            f"unknown format; known: {', '.join(PARSERS)}", param_hint="--format"
        )
    raw = file.read_text()
    if file.suffix == ".jsonl":
        texts = [
            (row if isinstance(row, str) else row["text"])
            for row in (json.loads(line) for line in raw.splitlines() if line.strip())
        ]
    else:
        texts = [raw]
    table = Table("#", "winner", "strength", "score", "matched", *(["rule"] if explain else []))
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        verdict = parse(text, fmt)
        counts[verdict.winner.value] += 1
        score = "" if verdict.score is None else f"{verdict.score:g}"
        row = [str(i), verdict.winner.value, str(verdict.strength), score, verdict.matched]
        table.add_row(*row, *([verdict.rule] if explain else []))
    console.print(table)
    console.print(", ".join(f"{name}: {n}" for name, n in sorted(counts.items())))


def _judge_config(
    model: str, strategy: str, k: int | None, backend: str, single_order: bool, sets, **extra
):
    from kiln.judge.v1 import judge_pb2 as pb
    from services.common.protobuf import struct_from_dict

    config = pb.JudgeConfig(
        model=model,
        strategy=strategy,
        backend=backend,
        single_order=single_order,
        parameters=struct_from_dict(parse_sets(sets)),
        **extra,
    )
    if k is not None:
        config.k = k
    return config


JUDGE_MODEL = typer.Option(..., "--model", "-m", help="the judge model (on the inference service)")
STRATEGY = typer.Option(
    "vanilla", "--strategy", help="vanilla | majority | criteria | cce | reviseval | cce+reviseval"
)
K_OPTION = typer.Option(None, "--k", help="cce: crowd judgments in context; majority: votes")
SINGLE_ORDER = typer.Option(False, "--single-order", help="judge (A, B) only")


@app.command("pair")
def judge_pair(
    instruction: str,
    response_a: str,
    response_b: str,
    model: str = JUDGE_MODEL,
    strategy: str = STRATEGY,
    k: int | None = K_OPTION,
    backend: str = BACKEND,
    single_order: bool = SINGLE_ORDER,
    sets: list[str] = SET_OPTION,
) -> None:
    """Judge one pair (both orders by default) and print each order's reasoning."""
    from kiln.judge.v1 import judge_pb2 as pb

    config = _judge_config(model, strategy, k, backend, single_order, sets)
    with connect("judge") as client:
        reply = client.stub.Judge(
            pb.JudgeRequest(
                request_id=request_id(),
                instruction=instruction,
                response_a=response_a,
                response_b=response_b,
                config=config,
            ),
            timeout=3600,
        )
    orders = [("(A, B)", reply.forward)]
    if reply.HasField("swapped"):
        orders.append(("(B, A)", reply.swapped))
    for name, order in orders:
        console.rule(f"{name}: {order.winner}")
        console.print(order.text)
    u = reply.usage
    console.print(
        f"verdict: [bold]{reply.verdict}[/bold]  calls {u.calls} (cached {u.cached_calls}), "
        f"tokens {u.prompt_tokens} in / {u.completion_tokens} out"
    )


@app.command("eval")
def judge_eval(
    dataset: str = typer.Argument(..., help="a pair dataset file or an object-store key"),
    model: str = JUDGE_MODEL,
    strategy: str = STRATEGY,
    k: int | None = K_OPTION,
    backend: str = BACKEND,
    single_order: bool = SINGLE_ORDER,
    limit: int = typer.Option(0, help="the first N items (0: all)"),
    max_calls: int = typer.Option(0, "--max-calls", help="backend-call budget (0: none)"),
    distill: bool = typer.Option(False, help="also export the judgments as an SFT set"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the planned calls only"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Evaluate a judge on a labeled pair dataset as a job; prints the reliability report."""
    import json

    from kiln.judge.v1 import judge_pb2 as pb

    apply_stack_env()
    config = _judge_config(model, strategy, k, backend, single_order, sets, max_calls=max_calls)
    request = pb.EvaluationRequest(
        request_id=request_id(),
        dataset=dataset_ref(dataset, "DATASET"),
        config=config,
        limit=limit,
        distill=distill,
    )
    if dry_run:
        with connect("judge") as client:
            estimate = client.stub.EstimateEvaluation(request)
        table = Table("stage", "calls")
        for stage, calls in sorted(estimate.calls_by_stage.items()):
            table.add_row(stage, f"{calls:.0f}")
        table.add_row("total", str(estimate.calls))
        console.print(table)
        budget = "within" if estimate.within_budget else "OVER"
        console.print(f"{estimate.items} items; {budget} the budget")
        return
    final = submit_and_follow("judge", lambda client: client.stub.SubmitEvaluation(request))
    from google.protobuf import json_format

    console.print_json(json.dumps(json_format.MessageToDict(final.summary)))


@app.command("crowd")
def judge_crowd(
    prompts: str = typer.Argument(..., help='JSON Lines of {"prompt"}: a file or object key'),
    policies: list[str] = typer.Option(..., "--policy", help="a policy model, repeatable"),
    model: str = JUDGE_MODEL,
    k: int | None = K_OPTION,
    out: str = typer.Option("crowd-sampling", "--out", help="output dataset name"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Crowd rejection sampling: the best policy answer per prompt (by CCE) as an SFT set."""
    from kiln.judge.v1 import judge_pb2 as pb

    apply_stack_env()
    request = pb.CrowdSamplingRequest(
        request_id=request_id(),
        prompts=dataset_ref(prompts, "PROMPTS"),
        policies=policies,
        config=_judge_config(model, "cce", k, "remote", False, sets),
        dataset_name=out,
    )
    submit_and_follow("judge", lambda client: client.stub.SubmitCrowdSampling(request))
