"""Transport-free errors. One server interceptor maps them to gRPC status codes."""

from __future__ import annotations


class KilnError(Exception):
    """Base of the errors callers may act on; anything else is an internal error."""


class InvalidInput(KilnError):
    """A request field is wrong; `field` names it (dotted path) and `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(KilnError):
    """A named thing (job, model, object, checkpoint) does not exist."""


class AlreadyExists(KilnError):
    """A create conflicts with something that exists."""


class FailedPrecondition(KilnError):
    """The request is valid but the system is not in a state to do it."""


class Unavailable(KilnError):
    """A dependency (Redis, object store, another service) cannot be reached; retry later."""


class ResourceExhausted(KilnError):
    """A quota, budget or capacity limit was hit."""


class IntegrityError(KilnError):
    """Stored bytes do not match their recorded sha256."""


class Cancelled(KilnError):
    """The work was cancelled by its owner."""


class Unimplemented(KilnError):
    """The request asks for something this build does not do (yet)."""
