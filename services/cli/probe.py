"""`kiln probe ...`: Chain-of-Probe on one chain, a selection, or a dataset job."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from services.cli.app import apply_stack_env, connect, console, request_id, submit_and_follow

app = typer.Typer(help="Chain-of-Probe: examine reasoning step by step.", no_args_is_help=True)


def _read_text(value: str) -> str:
    """A literal, or @path to read it from a file."""
    return Path(value[1:]).read_text() if value.startswith("@") else value


def _trajectory_table(trajectory) -> Table:
    table = Table("step", "answer", "confidence", "confidence in final answer")
    for step, final in zip(trajectory.steps, trajectory.final_confidence, strict=True):
        mark = " ← mind change" if step.step in trajectory.change_positions else ""
        table.add_row(str(step.step), step.answer + mark, f"{step.confidence:.3f}", f"{final:.3f}")
    return table


RAW_PROBE_OPTION = typer.Option(
    False, help="probe raw text (default: the chat template, the reasoning as the model's turn)"
)


@app.command("item")
def probe_item(
    model: str,
    question: str,
    reasoning: str = typer.Argument(..., help="the chain of thought, or @file"),
    option: list[str] = typer.Option([], "--option", "-o", help="lettered options, in order"),
    gold: str = typer.Option("", help="the correct letter or answer"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Probe one chain of thought: the answer and confidence before and after each step."""
    from kiln.prober.v1 import prober_pb2 as pb

    item = pb.ProbeItem(
        question=question, reasoning=_read_text(reasoning), options=option, gold=gold
    )
    with connect("prober") as client:
        t = client.stub.Probe(
            pb.ProbeRequest(request_id=request_id(), model=model, item=item, raw_prompt=raw),
            timeout=600,
        ).trajectory
    console.print(_trajectory_table(t))
    verdict = "" if not t.graded else (" (correct)" if t.correct else " (wrong)")
    console.print(
        f"final answer {t.final_answer}{verdict}; early answer: {t.early_answer}; "
        f"mind changes: {t.mind_changes}; unstable: {t.unstable}"
    )


@app.command("select")
def probe_select(
    model: str,
    question: str,
    candidate: list[str] = typer.Option(..., "--candidate", "-c", help="a chain, or @file"),
    option: list[str] = typer.Option([], "--option", "-o"),
    scorer: str = typer.Option("cop", help="cop | final_confidence | stability"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Rank sampled chains by their CoP score, beside the majority vote."""
    from kiln.prober.v1 import prober_pb2 as pb

    with connect("prober") as client:
        reply = client.stub.Select(
            pb.SelectRequest(
                request_id=request_id(),
                model=model,
                question=question,
                options=option,
                candidates=[_read_text(c) for c in candidate],
                scorer=scorer,
                raw_prompt=raw,
            ),
            timeout=600,
        )
    table = Table("rank", "candidate", "answer", "score")
    for position, r in enumerate(reply.ranked, 1):
        table.add_row(str(position), str(r.index), r.answer, f"{r.score:.3f}")
    console.print(table)
    console.print(f"majority vote: {reply.majority_answer}")


@app.command("run")
def probe_run(
    model: str,
    dataset: Path = typer.Argument(
        ..., help='JSON Lines of {"question", "reasoning", "options"?, "gold"?}'
    ),
    step_mode: str = typer.Option("lines", help="lines | sentences"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Probe a dataset as a job; the report (JSON + HTML plots) lands in the object store."""
    from kiln.prober.v1 import prober_pb2 as pb
    from services.common.objectstore import ObjectStore
    from services.common.protobuf import ref_to_pb

    apply_stack_env()
    digest = request_id()[:12]
    ref = ObjectStore().put_file(f"datasets/probe-{digest}/v1/{dataset.name}", dataset)
    request = pb.SubmitProbeRequest(
        request_id=request_id(),
        model=model,
        dataset=ref_to_pb(ref),
        step_mode=step_mode,
        raw_prompt=raw,
    )
    job = submit_and_follow("prober", lambda client: client.stub.SubmitProbe(request))
    console.print(f"report: s3://{ref.bucket}/runs/{job.id}/report.html")
