"""Transport-free errors. Each names its gRPC status code (`code`): one server interceptor
answers with it, and a failed job records it beside its message."""

from __future__ import annotations

from typing import ClassVar


class KilnError(Exception):
    """Base of the errors callers may act on; anything else is an internal error."""

    code: ClassVar[str] = "INTERNAL"


class InvalidInput(KilnError):
    """A request field is wrong; `field` names it (dotted path) and `reason` says why."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(KilnError):
    """A named thing (job, model, object, checkpoint) does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(KilnError):
    """A create conflicts with something that exists."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(KilnError):
    """The request is valid but the system is not in a state to do it."""

    code = "FAILED_PRECONDITION"


class Unavailable(KilnError):
    """A dependency (Redis, object store, another service) cannot be reached; retry later."""

    code = "UNAVAILABLE"


class ResourceExhausted(KilnError):
    """A quota, budget or capacity limit was hit."""

    code = "RESOURCE_EXHAUSTED"


class IntegrityError(KilnError):
    """Stored bytes do not match their recorded sha256."""

    code = "DATA_LOSS"


class Cancelled(KilnError):
    """The work was cancelled by its owner."""

    code = "CANCELLED"


class Aborted(KilnError):
    """The work was given up: its worker was lost too many times."""

    code = "ABORTED"


class DeadlineExceeded(KilnError):
    """The work ran past its time limit."""

    code = "DEADLINE_EXCEEDED"


class Unimplemented(KilnError):
    """The request asks for something this build does not do (yet)."""

    code = "UNIMPLEMENTED"
