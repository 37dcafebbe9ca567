"""Queue names and message builders, so any process can publish without importing the actors.

Messages stay small and bounded: a chunk message names its batch; embed and write messages carry
the batch's chunk texts (and vectors), bounded by ``BATCH_SIZE`` files of at most
``BATCH_MAX_BYTES`` source bytes.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import dramatiq
import numpy as np

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


def _message(queue: str, actor: str, *args: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})


def plan_message(job_id: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(PLAN_QUEUE, "plan_job", str(job_id))


def chunk_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(CHUNK_QUEUE, "chunk_batch", str(job_id), batch_no, str(token))


def embed_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID, payload: dict[str, Any]) -> dramatiq.Message[Any]:
    return _message(EMBED_QUEUE, "embed_batch", str(job_id), batch_no, str(token), payload)


def write_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID, payload: dict[str, Any]) -> dramatiq.Message[Any]:
    return _message(WRITE_QUEUE, "write_batch", str(job_id), batch_no, str(token), payload)


def record_message(job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> dramatiq.Message[Any]:
    return _message(COORDINATE_QUEUE, "record_batch", str(job_id), batch_no, str(token))


def encode_vectors(vectors: Vectors) -> str:
    """float32 little-endian, base64: a quarter of the size of JSON floats, and exact."""
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(encoded: str, dimension: int) -> Vectors:
    flat = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    return flat.reshape(-1, dimension).astype(np.float32, copy=False)
