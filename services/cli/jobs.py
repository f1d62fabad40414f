"""`kiln jobs ...`: inspect and control the jobs of a service."""

from __future__ import annotations

import typer
from rich.table import Table

from services.cli.app import (
    SERVICE_OPTION,
    connect,
    console,
    follow,
    job_row,
    progress_bar,
    request_id,
    submit_and_follow,
)

app = typer.Typer(help="Inspect and control jobs.", no_args_is_help=True)


@app.command("list")
def jobs_list(service: str = SERVICE_OPTION, limit: int = 20) -> None:
    """The service's most recent jobs."""
    from kiln.common.v1 import common_pb2

    with connect(service) as client:
        reply = client.jobs.ListJobs(common_pb2.ListJobsRequest(limit=limit))
    table = Table("id", "kind", "state", "progress", "message", "error")
    for job in reply.jobs:
        table.add_row(*job_row(job))
    console.print(table)


@app.command("get")
def jobs_get(job_id: str, service: str = SERVICE_OPTION) -> None:
    """One job as JSON."""
    from google.protobuf import json_format

    from kiln.common.v1 import common_pb2

    with connect(service) as client:
        job = client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job_id))
    console.print_json(json_format.MessageToJson(job))


@app.command("watch")
def jobs_watch(job_id: str, service: str = SERVICE_OPTION) -> None:
    """Follow a job with a progress bar until it ends."""
    with connect(service) as client, progress_bar() as bar:
        final = follow(client, job_id, bar, job_id[:8])
    console.print(" ".join(job_row(final)[2:4]))


@app.command("cancel")
def jobs_cancel(
    job_id: str,
    service: str = SERVICE_OPTION,
    wait: bool = typer.Option(True, help="wait until the job has stopped"),
) -> None:
    """Cancel a queued or running job (a running one stops at its next progress report, or
    by force after KILN_CANCEL_GRACE_S)."""
    from kiln.common.v1 import common_pb2

    with connect(service) as client:
        job = client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job_id))
        if wait:
            *_, job = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job_id))
    console.print(" ".join(job_row(job)[:3]))


@app.command("canary")
def jobs_canary(
    service: str = SERVICE_OPTION,
    shards: int = 4,
    shard_seconds: float = 0.2,
    allocate_mb: int = typer.Option(
        0, help="MiB each shard holds: checks the worker's memory cap (KILN_WORKER_MEMORY_MB)"
    ),
    watch: bool = True,
) -> None:
    """Submit the canary job (queue -> worker -> object store) and watch it."""
    from kiln.common.v1 import common_pb2

    request = common_pb2.SubmitCanaryRequest(
        request_id=request_id(),
        shards=shards,
        shard_seconds=shard_seconds,
        allocate_mb=allocate_mb,
    )
    if watch:
        submit_and_follow(service, lambda client: client.jobs.SubmitCanary(request), "canary")
        return
    with connect(service) as client:
        console.print(f"job {client.jobs.SubmitCanary(request).id}")
