"""The pieces every `kiln` command shares: the Typer app, the console, the stack's
environment, a client, --set parsing, dataset uploads, and one way to run a job and follow it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.common.errors import KilnError

app = typer.Typer(help="kiln: post-training and evaluation services.", no_args_is_help=True)
console = Console()

SERVICE_OPTION = typer.Option("trainer", "--service", "-s", help="the service owning the job")


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", help="print a failure's traceback"),
) -> None:
    """kiln: post-training and evaluation services."""
    if debug:
        os.environ["KILN_DEBUG"] = "1"


def home() -> Path:
    from services.common.settings import get_settings

    return get_settings().home


def apply_stack_env() -> None:
    """Points this process at the embedded stack when one is running and KILN_* is unset."""
    from services.cli.embedded import load_stack
    from services.common.settings import get_settings

    stack = load_stack(home())
    if stack:
        for key, value in stack.env().items():
            os.environ.setdefault(key, value)
        get_settings.cache_clear()


def connect(service: str):
    from services.common.clients import KilnClient

    apply_stack_env()
    return KilnClient(service)


SET_OPTION = typer.Option(None, "--set", help="name=value (JSON value), repeatable")
BACKEND = typer.Option("remote", "--backend", help="remote | openai | vllm | hf")


def parse_sets(values: list[str] | None) -> dict:
    """name=value pairs (JSON values, else strings); a dotted name nests: agents.k=3 ->
    {"agents": {"k": 3}}."""
    import json

    parsed: dict = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not name=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = name.split(".")
        node = parsed
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise typer.BadParameter(f"{item!r}: {part} is already a value")
        node[leaf] = value
    return parsed


def dataset_ref(value: str, option: str) -> Any:
    """A local file (uploaded under datasets/cli-<digest>/) or an object-store key, as an
    ObjectRef; InvalidInput naming the command's `option` when it is neither."""
    from services.common.errors import InvalidInput, NotFound
    from services.common.objectstore import ObjectStore, validate_key
    from services.common.protobuf import ref_to_pb

    apply_stack_env()
    store = ObjectStore()
    path = Path(value)
    if path.is_file():
        digest = uuid.uuid4().hex[:12]
        return ref_to_pb(store.put_file(f"datasets/cli-{digest}/v1/{path.name}", path))
    try:
        return ref_to_pb(store.stat(validate_key(value, option)))
    except (InvalidInput, NotFound):
        raise InvalidInput(
            option, f"{value!r} is neither a local file nor an object in the store"
        ) from None


def job_row(job: Any) -> list[str]:
    """id, kind, state, progress, message and error of a Job, for a table row."""
    from kiln.common.v1 import common_pb2

    state = common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    return [
        job.id,
        job.kind,
        state,
        f"{job.progress.fraction:.0%}",
        job.progress.message,
        job_error(job),
    ]


def job_error(job: Any) -> str:
    """A job's error with its status code in front, when it has one."""
    return f"{job.error_code}: {job.error}" if job.error_code else job.error


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )


class JobFailed(KilnError):
    """A followed job ended FAILED or CANCELLED (or its watch ended early)."""


def follow(client: Any, job_id: str, bar: Progress, label: str) -> Any:
    """Streams a job's progress into a bar until it ends; returns the final Job message.
    Raises JobFailed when the job did not succeed."""
    from kiln.common.v1 import common_pb2

    task = bar.add_task(label, total=1.0)
    final = None
    for job in client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job_id)):
        metrics = " ".join(
            f"{name} {value:.4g}" for name, value in list(job.progress.metrics.items())[:3]
        )
        bar.update(
            task,
            completed=job.progress.fraction,
            description=f"{label}: {job.progress.message} {metrics}".rstrip(),
        )
        final = job
    if final is None or final.state != common_pb2.JOB_STATE_SUCCEEDED:
        state = common_pb2.JobState.Name(final.state) if final else "LOST"
        raise JobFailed(f"{label} job {job_id} ended {state}: {job_error(final) if final else ''}")
    bar.update(task, completed=1.0)
    return final


def submit_and_follow(
    service: str, submit: Callable[[Any], Any], label: str = "", bar: Progress | None = None
) -> Any:
    """The one way a command runs a job: submit(client) sends the request (with a new
    request_id), then the job is followed to its end in bar (or a bar of its own, with the job
    id and its last state printed). Returns the final Job; JobFailed if it did not succeed."""
    with connect(service) as client:
        job = submit(client)
        if bar is not None:
            return follow(client, job.id, bar, label or service)
        console.print(f"job {job.id}")
        with progress_bar() as own:
            final = follow(client, job.id, own, label or job.id[:8])
    console.print(" ".join(job_row(final)[2:4]))
    return final


def request_id() -> str:
    """A fresh idempotency key for one request."""
    return uuid.uuid4().hex
