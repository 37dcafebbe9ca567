"""The embedder contract every backend meets."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    # A type only: numpy loads where vectors are made, not on the server's start path (issue 16).
    import numpy as np
    import numpy.typing as npt

    Vectors: TypeAlias = npt.NDArray[np.float32]


class EmbedderUnavailableError(RuntimeError):
    """The backend did not answer after every retry. The message names the backend and the cause."""


class EmbedderRejectedError(EmbedderUnavailableError):
    """The backend answered, in a way no retry or wait can fix: vectors of the wrong size, a
    non-retryable HTTP status (model not found, bad request, refused credentials). Jobs fail at once
    with this message instead of waiting ``BLOCKED_TIMEOUT_SECONDS`` for a service that is up."""


class Embedder(abc.ABC):
    """Turns texts into unit-length float32 vectors of a fixed :attr:`dimension`.

    Implementations are created on the event loop that will call them and are safe to call from
    several tasks at once (they serialise or pool internally as their backend needs).
    """

    #: Recorded with each repository, so vectors from different models are never mixed.
    name: str
    dimension: int

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; returns an array of shape ``(len(texts), dimension)``.

        Raises:
            EmbedderUnavailableError: the backend failed for good (after retries).
        """

    async def aclose(self) -> None:  # noqa: B027 (optional hook, most backends hold nothing)
        """Release connections or threads."""


def normalise(vectors: Vectors) -> Vectors:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)
