"""Queue names, message builders and the typed batch payload, so any process can publish without
importing the actors.

Messages stay small and bounded: chunk, embed and record messages name their batch; a write
message carries the batch's chunk texts, bounded by ``BATCH_SIZE`` files of at most
``BATCH_MAX_BYTES`` source bytes (the embed stage reads the stored chunks from the database, so
an embed host needs no access to the repositories). The payload is a :class:`BatchPayload`; :func:`encode_payload`
and :func:`decode_payload` are the only code that knows its wire form (a ``version`` number, chunks
as ``[start_line, end_line, symbol, content, header]`` lists, which keeps messages compact).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import dramatiq

if TYPE_CHECKING:
    from actors.embedders.base import Vectors

PLAN_QUEUE = "index.plan"
CHUNK_QUEUE = "index.chunk"
EMBED_QUEUE = "index.embed"
WRITE_QUEUE = "index.write"
COORDINATE_QUEUE = "index.coordinate"
ALL_QUEUES = (PLAN_QUEUE, CHUNK_QUEUE, EMBED_QUEUE, WRITE_QUEUE, COORDINATE_QUEUE)

#: Retry policy of every pipeline stage: transient faults (database restart, broker hiccup) are
#: retried with backoff; a stage that keeps failing fails its job through ``stage_failed`` instead
#: of leaving it running forever.
STAGE_RETRIES: dict[str, Any] = {
    "max_retries": 10,
    "min_backoff": 1000,
    "max_backoff": 30000,
    "on_retry_exhausted": "stage_failed",
}


logger = logging.getLogger(__name__)

#: Wire version of :class:`BatchPayload`. Version 1 (workers before it had a number) has the same
#: layout without the ``version`` key, so it is read as is during a rolling upgrade.
PAYLOAD_VERSION = 2
READABLE_VERSIONS = (1, 2)


class UnsupportedPayloadError(ValueError):
    """A payload this worker cannot read (a newer worker's version, or malformed).

    The stage drops the message: the batch keeps its state and token, and the server's upkeep
    re-sends it from the chunk stage once it has been idle for ``STALE_BATCH_SECONDS``.
    """


class ChunkRecord(NamedTuple):
    start_line: int
    end_line: int
    symbol: str | None
    content: str
    header: str


class NotIndexed(NamedTuple):
    """A file of the batch that was skipped (too large, binary) or failed (unreadable), and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str
    hash: str  # sha256 hex of the bytes read
    language: str
    size: int
    lines: int
    chunks: tuple[ChunkRecord, ...]


@dataclass(frozen=True, slots=True)
class BatchPayload:
    """What the chunk stage produced for one batch; the embed stage adds ``vectors`` (one row per chunk)."""

    files: tuple[FileRecord, ...]
    skipped: tuple[NotIndexed, ...] = ()
    failed: tuple[NotIndexed, ...] = ()
    vectors: Vectors | None = None
    #: Who made ``vectors`` (the embedder's name): the write stage refuses them for a repository
    #: planned for another model. None in payloads from workers older than the tag.
    embedder: str | None = None

    @property
    def chunks(self) -> list[ChunkRecord]:
        return [chunk for item in self.files for chunk in item.chunks]

    def with_vectors(self, vectors: Vectors, embedder: str) -> BatchPayload:
        return dataclasses.replace(self, vectors=vectors, embedder=embedder)


def encode_payload(payload: BatchPayload) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "files": [
            {
                "path": item.path,
                "hash": item.hash,
                "language": item.language,
                "size": item.size,
                "lines": item.lines,
                "chunks": [list(chunk) for chunk in item.chunks],
            }
            for item in payload.files
        ],
        "skipped": [list(entry) for entry in payload.skipped],
        "failed": [list(entry) for entry in payload.failed],
    }
    if payload.vectors is not None:
        data["vectors"] = encode_vectors(payload.vectors)
        data["dimension"] = int(payload.vectors.shape[1])
    if payload.embedder is not None:
        data["embedder"] = payload.embedder
    return data


def decode_payload(data: Mapping[str, Any]) -> BatchPayload:
    """The payload of an embed or write message.

    Raises:
        UnsupportedPayloadError: a version this worker does not know, or fields missing.
    """
    version = data.get("version", 1)
    if version not in READABLE_VERSIONS:
        raise UnsupportedPayloadError(f"payload version {version!r}; this worker reads {READABLE_VERSIONS}")
    try:
        files = tuple(
            FileRecord(
                path=str(item["path"]),
                hash=str(item["hash"]),
                language=str(item["language"]),
                size=int(item["size"]),
                lines=int(item["lines"]),
                chunks=tuple(
                    ChunkRecord(int(s), int(e), sym, str(body), str(head)) for s, e, sym, body, head in item["chunks"]
                ),
            )
            for item in data["files"]
        )
        skipped = tuple(NotIndexed(str(path), str(reason)) for path, reason in data.get("skipped", ()))
        failed = tuple(NotIndexed(str(path), str(reason)) for path, reason in data.get("failed", ()))
        vectors = decode_vectors(data["vectors"], int(data["dimension"])) if "vectors" in data else None
    except (KeyError, TypeError, ValueError) as error:
        raise UnsupportedPayloadError(f"malformed version {version} payload: {type(error).__name__}: {error}") from None
    embedder = data.get("embedder")
    return BatchPayload(files, skipped, failed, vectors, str(embedder) if embedder is not None else None)


def _message(queue: str, actor: str, *args: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})


def plan_message(job_id: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(PLAN_QUEUE, "plan_job", str(job_id))


def chunk_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(CHUNK_QUEUE, "chunk_batch", str(job_id), batch_no, str(token))


def embed_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> dramatiq.Message[Any]:
    """No payload: the embed stage reads the batch's stored chunks that still lack a vector."""
    return _message(EMBED_QUEUE, "embed_batch", str(job_id), batch_no, str(token))


def write_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID, payload: BatchPayload) -> dramatiq.Message[Any]:
    """The chunk stage's payload (no vectors: they come in the vector phase)."""
    return _message(WRITE_QUEUE, "write_batch", str(job_id), batch_no, str(token), encode_payload(payload))


def record_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(COORDINATE_QUEUE, "record_batch", str(job_id), batch_no, str(token))


def encode_vectors(vectors: Vectors) -> str:
    """float32 little-endian, base64: a quarter of the size of JSON floats, and exact."""
    # numpy here, not at import: the server imports this module (its plan message) at start.
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(encoded: str, dimension: int) -> Vectors:
    import numpy as np

    flat = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    return flat.reshape(-1, dimension).astype(np.float32, copy=False)
