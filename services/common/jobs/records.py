"""A job's record and what its task body returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.common.objectstore import ObjectRef


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass
class JobRecord:
    id: str
    service: str
    kind: str
    state: JobState = JobState.QUEUED
    request_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)
    outputs: list[ObjectRef] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # what a user should read: why it failed, was cancelled or requeued
    error_code: str = ""  # the gRPC status code name of a FAILED or CANCELLED job's error
    attempts: int = 0
    cancel_requested: bool = False
    owner: str = ""  # host:pid of the delivery running it
    heartbeat_at: float = 0.0
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass
class JobResult:
    """What a task body returns: the committed outputs and a JSON-able summary."""

    outputs: list[ObjectRef] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
