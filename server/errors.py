"""Errors a caller can cause. Tools turn each into a ``ToolError`` whose text says what to do."""

from __future__ import annotations

from models.database_watch import is_database_outage


class CallerError(Exception):
    """Base: the request cannot be served as asked; the message is shown to the client verbatim."""


class ValidationError(CallerError):
    """An argument is malformed or not allowed (bad path, bad id, bad filter)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"validation error: {message}")


class NotFoundError(CallerError):
    """The job or repository named does not exist."""


class InvalidStateError(CallerError):
    """The operation does not apply in the object's current state (cancelling a finished job)."""


def outage_message(error: BaseException) -> str | None:
    """What to tell a client when a dependency failed under its request, or None when it is a bug.

    Names the dependency and the kind of failure (the exception's type), never a URL, host or
    credential; ``/readyz`` reports the same. Without this the client sees only the SDK's bare
    "Error executing tool <name>".
    """
    if not is_database_outage(error):
        return None
    kind = type(getattr(error, "orig", None) or error).__name__
    return (
        f"the database is unavailable ({kind}). Retry in a moment; if it persists, "
        "check that PostgreSQL is running and has free disk space (GET /readyz reports it)"
    )


class BrokerUnavailableError(CallerError):
    """RabbitMQ cannot be reached, so no work can be handed to the workers; the message names the fix."""
