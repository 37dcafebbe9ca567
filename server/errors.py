"""Errors a caller can cause. Tools turn each into a ``ToolError`` whose text says what to do."""

from __future__ import annotations


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


class BrokerUnavailableError(CallerError):
    """RabbitMQ cannot be reached, so no work can be handed to the workers; the message names the fix."""
