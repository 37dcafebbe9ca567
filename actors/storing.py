"""One bad file is never fatal at the write stage: a file PostgreSQL refuses is skipped and reported.

The chunk stage already keeps out what it can see (NUL bytes, undecodable names, oversized or
binary files), but some limits only PostgreSQL knows: a path longer than a btree index entry may
be (about 2,700 bytes, ``files (repository_id, path)``), a chunk with more distinct words than a
``tsvector`` holds (1 MB: the content is cut at 20,000 characters for it, migration 0003, but the
header carries a definition's whole name, and one identifier can be 900 KB), or any other value
it rejects as data. Such an error used to fail the batch's write ten times and then the whole job.

:func:`store_rejecting_bad_files` stores the batch in a savepoint; when PostgreSQL refuses it with
a data or limit error (SQLSTATE classes 22 and 54, which name the value, never the connection), it
stores the files one by one, each in its own savepoint, and reports each refused file as failed
with PostgreSQL's reason in plain words. Every other error (connection lost, deadlock, ...) is
raised as before, for the stage's retries. A refused file keeps whatever the index held for it.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from actors.messages import BatchPayload, FileRecord, NotIndexed

logger = logging.getLogger(__name__)

#: SQLSTATE classes that describe the value stored, not the session: 22 data exception (invalid
#: text, NaN in a vector), 54 program limit exceeded (index row size, tsvector size).
PER_FILE_SQLSTATE_CLASSES = ("22", "54")

StoreBatch = Callable[[AsyncConnection, uuid.UUID, uuid.UUID, BatchPayload, Sequence[Any | None]], Awaitable[int]]


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE behind ``error``: asyncpg's own exception, or SQLAlchemy's wrapper of it."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def refused_value(error: BaseException) -> bool:
    """True when PostgreSQL refused a value the batch carries (so one of its files is to blame)."""
    code = sqlstate_of(error)
    return code is not None and code[:2] in PER_FILE_SQLSTATE_CLASSES


def _postgres_message(error: BaseException) -> str:
    current: BaseException | None = error
    while current is not None:
        if getattr(current, "sqlstate", None):
            return str(current).splitlines()[0] if str(current) else type(current).__name__
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return str(error).splitlines()[0]


def refusal_reason(error: BaseException, item: FileRecord) -> str:
    """Why PostgreSQL refused ``item``, for the job's ``files_not_indexed`` event and the failed count."""
    message = _postgres_message(error)
    if "index row size" in message:
        size = len(item.path.encode("utf-8"))
        return f"path too long to store ({size:,} bytes; PostgreSQL's index entries hold about 2,700)"
    if "too long for tsvector" in message:
        return f"too many distinct words for PostgreSQL's full-text index (tsvector limit 1 MB): {message}"
    return f"PostgreSQL refused it: {message}"


async def store_rejecting_bad_files(
    conn: AsyncConnection,
    store: StoreBatch,
    repository_id: uuid.UUID,
    job: uuid.UUID,
    batch: BatchPayload,
    vectors: Sequence[Any | None],
) -> tuple[int, BatchPayload, list[Any | None]]:
    """``store(conn, repository_id, job, batch, vectors)``, leaving out the files PostgreSQL refuses.

    ``vectors`` has one entry per chunk of ``batch`` (None: no vector yet). Returns the chunks
    written, the batch as stored (the refused files moved from ``files`` to ``failed``, with the
    reason) and the vectors of the stored chunks.
    """
    try:
        async with conn.begin_nested():
            return await store(conn, repository_id, job, batch, vectors), batch, list(vectors)
    except Exception as error:
        if not refused_value(error):
            raise
        logger.warning("PostgreSQL refused batch data (%s); storing its files one by one", _postgres_message(error))
    chunks = 0
    kept: list[FileRecord] = []
    kept_vectors: list[Any | None] = []
    refused: list[NotIndexed] = []
    first_chunk = 0
    for item in batch.files:
        single = dataclasses.replace(batch, files=(item,), skipped=(), failed=())
        own = list(vectors[first_chunk : first_chunk + len(item.chunks)])
        first_chunk += len(item.chunks)
        try:
            async with conn.begin_nested():
                chunks += await store(conn, repository_id, job, single, own)
        except Exception as error:
            if not refused_value(error):
                raise
            refused.append(NotIndexed(item.path, refusal_reason(error, item)))
            continue
        kept.append(item)
        kept_vectors.extend(own)
    stored = dataclasses.replace(batch, files=tuple(kept), failed=batch.failed + tuple(refused))
    return chunks, stored, kept_vectors
