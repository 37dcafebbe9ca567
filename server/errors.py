"""Errors a caller can cause. Tools turn each into a ``ToolError`` whose text says what to do."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


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


#: Modules whose failures mean "the database is unavailable", not "the request was wrong".
_DATABASE_MODULES = ("sqlalchemy", "asyncpg")


def _raised_in(error: BaseException, packages: tuple[str, ...]) -> bool:
    traceback = error.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in packages:
            return True
        traceback = traceback.tb_next
    return False


def outage_message(error: BaseException) -> str | None:
    """What to tell a client when a dependency failed under its request, or None when it is a bug.

    Names the dependency and the kind of failure (the exception's type), never a URL, host or
    credential; ``/readyz`` reports the same. Without this the client sees only the SDK's bare
    "Error executing tool <name>".
    """
    kind = type(getattr(error, "orig", None) or error).__name__
    database_down = isinstance(error, OperationalError | InterfaceError | PoolTimeoutError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    if not database_down and isinstance(error, OSError | TimeoutError) and _raised_in(error, _DATABASE_MODULES):
        database_down = True  # asyncpg's connect raises ConnectionRefusedError & co. unwrapped
    if not database_down and type(error).__module__.split(".", 1)[0] == "asyncpg":
        database_down = "Connection" in kind or "CannotConnect" in kind or "Shutdown" in kind
    if database_down:
        return (
            f"the database is unavailable ({kind}). Retry in a moment; if it persists, "
            "check that PostgreSQL is running and has free disk space (GET /readyz reports it)"
        )
    return None
