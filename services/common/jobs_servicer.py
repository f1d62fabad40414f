"""kiln.common.v1.Jobs: the job RPCs every server registers for its own service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from kiln.common.v1 import common_pb2, common_pb2_grpc
from services.common import canary
from services.common.jobs import JobManager, JobRecord, JobState
from services.common.protobuf import ref_to_pb, struct_from_dict

WATCH_POLL_S = 0.2

_STATE_TO_PB = {
    JobState.QUEUED: common_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: common_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: common_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: common_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: common_pb2.JOB_STATE_CANCELLED,
}
_PB_TO_STATE = {v: k for k, v in _STATE_TO_PB.items()}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_pb(record: JobRecord) -> common_pb2.Job:
    progress = record.progress
    return common_pb2.Job(
        id=record.id,
        service=record.service,
        kind=record.kind,
        state=_STATE_TO_PB[record.state],
        progress=common_pb2.Progress(
            fraction=float(progress.get("fraction", 0.0)),
            message=progress.get("message", ""),
            step=int(progress.get("step", 0)),
            total=int(progress.get("total", 0)),
            metrics=struct_from_dict(progress.get("metrics", {})),
        ),
        outputs=[ref_to_pb(o) for o in record.outputs],
        summary=struct_from_dict(record.summary),
        error=record.error,
        error_code=record.error_code,
        request_id=record.request_id,
        created_at=_timestamp(record.created_at),
        updated_at=_timestamp(record.updated_at),
        attempts=record.attempts,
    )


class JobsServicer(common_pb2_grpc.JobsServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    async def GetJob(
        self, request: common_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Job:
        return job_to_pb(await asyncio.to_thread(self.manager.get, request.job_id))

    async def WatchJob(
        self, request: common_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Job]:
        last_seen = None
        while True:
            record = await asyncio.to_thread(self.manager.get, request.job_id)
            seen = (record.state, record.progress, record.attempts, record.error)
            if seen != last_seen:
                last_seen = seen
                yield job_to_pb(record)
            if record.terminal:
                return
            await asyncio.sleep(WATCH_POLL_S)

    async def CancelJob(
        self, request: common_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Job:
        return job_to_pb(await asyncio.to_thread(self.manager.cancel, request.job_id))

    async def ListJobs(
        self, request: common_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListJobsResponse:
        from services.common.errors import InvalidInput

        if request.service and request.service != self.manager.service:
            raise InvalidInput(
                "service",
                f"this server lists {self.manager.service!r} jobs; "
                f"ask the {request.service} server",
            )
        if not 0 <= request.limit <= 1000:
            raise InvalidInput("limit", "must be in 0..1000")
        states = frozenset(_PB_TO_STATE[s] for s in request.states if s in _PB_TO_STATE)
        records = await asyncio.to_thread(self.manager.list, request.limit or 50, states or None)
        return common_pb2.ListJobsResponse(jobs=[job_to_pb(r) for r in records])

    async def SubmitCanary(
        self, request: common_pb2.SubmitCanaryRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Job:
        payload = canary.validate(request.shards, request.shard_seconds, request.allocate_mb)
        record = await asyncio.to_thread(self.manager.submit, "canary", payload, request.request_id)
        return job_to_pb(record)


def register_jobs(server: grpc.aio.Server, jobs: JobManager) -> str:
    common_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs), server)
    return common_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name
