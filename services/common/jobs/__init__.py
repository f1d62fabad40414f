"""Jobs: long work on Celery workers, with its record (state, progress, outputs) in Redis.

The record in Redis is the one source of truth a server reads for GetJob/WatchJob/ListJobs.
A job is submitted once per client request_id (idempotency key), delivered at least once
(acks_late + reject_on_worker_lost), and its task body writes outputs to deterministic keys
under `runs/<job_id>/` so a redelivery can skip what is already written.

Supervision: the delivery that runs a job owns it (`owner`, host:pid) and heartbeats every
KILN_JOB_HEARTBEAT_S. A second delivery of a job whose owner is alive does nothing. The
service's server requeues a RUNNING job whose heartbeat is older than KILN_JOB_LOST_AFTER_S
(its worker died with its message unacknowledged) and fails it after KILN_JOB_MAX_ATTEMPTS
deliveries. CancelJob is cooperative first (the body's next progress report raises Cancelled)
and forced after KILN_CANCEL_GRACE_S (the heartbeat records CANCELLED and kills its process;
the worker starts a fresh child). A job ends once: the first terminal state recorded wins.
"""

from services.common.jobs.manager import JobManager
from services.common.jobs.records import TERMINAL, JobRecord, JobResult, JobState
from services.common.jobs.store import JobStore, owner_alive, redis_client, this_process
from services.common.jobs.worker import JobContext, job_task, memory_cap_mb

__all__ = [
    "TERMINAL",
    "JobContext",
    "JobManager",
    "JobRecord",
    "JobResult",
    "JobState",
    "JobStore",
    "job_task",
    "memory_cap_mb",
    "owner_alive",
    "redis_client",
    "this_process",
]
