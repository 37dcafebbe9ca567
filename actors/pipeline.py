"""The per-batch chain, in two phases, one queue per stage.

Text phase: ``chunk_batch → write_batch → record_batch`` stores a batch's files and chunks (with
the vectors the embedding cache already knows, NULL for the others): the batch is then full-text
searchable. Vector phase: ``embed_batch → record_batch`` embeds the stored chunks still without a
vector, committing each embedder call's vectors with the cache and the counters, so progress moves
per call and a redelivered batch resumes after its last committed call.

Each stage claims the batch (its message must carry the ledger's current token), does its work
outside any transaction, then hands over with :func:`models.ledger.hop`. Embedding workers can be
run apart from the rest (``dramatiq actors.worker -Q index.embed``), on a GPU host for instance:
they read the texts from the database, never the repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from actors import metrics
from actors.broker import stage_actor, worker_resources
from actors.chunking import chunk_file, embedding_text
from actors.dispatch import job_ended, publish
from actors.embedders import EmbedderRejectedError, EmbedderUnavailableError
from actors.messages import (
    CHUNK_QUEUE,
    EMBED_QUEUE,
    STAGE_RETRIES,
    WRITE_QUEUE,
    BatchPayload,
    ChunkRecord,
    FileRecord,
    NotIndexed,
    UnsupportedPayloadError,
    decode_payload,
    embed_message,
    record_message,
    write_message,
)
from actors.resources import Resources
from actors.scanning import RootRejectedError, checked_root, language_of, looks_binary
from actors.storing import store_rejecting_bad_files
from models import embedding_cache, jobs, ledger
from models.logs import log_context
from models.roles import file_role
from models.settings import Settings

logger = logging.getLogger(__name__)


class NotIndexableError(Exception):
    """The path changed since the scan into something that must not be read; the text says what."""


def read_inside(real_root: Path, path: Path, max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes of the regular file ``path``, which must still resolve inside ``real_root``.

    Re-checked at read time because the tree may change after the scan: a file swapped for a
    symlink to ``/etc/shadow`` must not be indexed, and a file swapped for a FIFO must not block.
    """
    try:
        real = path.resolve(strict=True)
    except RuntimeError:
        raise NotIndexableError("symlink loop") from None
    if not real.is_relative_to(real_root):
        raise NotIndexableError("symlink outside repository")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotIndexableError("unreadable: not a regular file")
    with os.fdopen(fd, "rb") as handle:
        return handle.read(max_bytes + 1)


def read_and_chunk(root: Path, files: list[dict[str, Any]], settings: Settings) -> BatchPayload:
    """Read, hash and chunk a batch's files. Files that cannot be indexed are counted, never fatal."""
    out_files: list[FileRecord] = []
    skipped: list[NotIndexed] = []
    failed: list[NotIndexed] = []
    try:
        real_root = checked_root(str(root), settings.allowed_roots)
    except RootRejectedError as error:
        return BatchPayload((), (), tuple(NotIndexed(entry["path"], str(error)) for entry in files))
    for entry in files:
        relative = entry["path"]
        try:
            raw = read_inside(real_root, root / relative, settings.max_file_bytes)
        except FileNotFoundError:
            failed.append(NotIndexed(relative, "deleted since the scan"))
            continue
        except NotIndexableError as reason:
            failed.append(NotIndexed(relative, str(reason)))
            continue
        except OSError as error:
            failed.append(NotIndexed(relative, f"unreadable: {error.strerror or error}"))
            continue
        if len(raw) > settings.max_file_bytes:
            skipped.append(NotIndexed(relative, "too large"))
            continue
        if looks_binary(raw):
            skipped.append(NotIndexed(relative, "binary"))
            continue
        content = raw.decode("utf-8", errors="replace")
        language = language_of(relative)
        chunks = chunk_file(
            relative,
            content,
            language,
            window=settings.chunk_lines,
            overlap=settings.chunk_overlap_lines,
            max_chars=settings.chunk_max_chars,
        )
        out_files.append(
            FileRecord(
                path=relative,
                hash=hashlib.sha256(raw).hexdigest(),
                language=language,
                size=len(raw),
                lines=content.count("\n") + (0 if content.endswith("\n") or not content else 1),
                chunks=tuple(ChunkRecord(c.start_line, c.end_line, c.symbol, c.text, c.header) for c in chunks),
            )
        )
    return BatchPayload(tuple(out_files), tuple(skipped), tuple(failed))


@stage_actor(queue_name=CHUNK_QUEUE, time_limit=600_000, **STAGE_RETRIES)
@metrics.timed_stage("chunk")
async def chunk_batch(job_id: str, batch_no: int, token: str) -> None:
    res = await worker_resources().get()
    job, current = uuid.UUID(job_id), uuid.UUID(token)
    with log_context(job_id=job_id, batch=batch_no, stage="chunk"):
        async with res.engine.begin() as conn:
            claim = await ledger.claim(conn, job, batch_no, state="queued", token=current, run_column="chunk_runs")
        if claim is None or claim.job_status not in jobs.LIVE_STATUSES:
            logger.debug("dropping chunk message (stale or job not running)")
            return
        payload = await asyncio.to_thread(read_and_chunk, Path(claim.repo_path), claim.files, res.settings)

        async def send(next_token: uuid.UUID) -> None:
            await publish(write_message(job, batch_no, next_token, payload))

        async with res.engine.begin() as conn:
            await ledger.hop(
                conn, job, batch_no, from_state="queued", token=current, to_state="chunked", send_next=send
            )


def plan_embedder_calls(items: list[tuple[bytes, str]], max_size: int) -> list[list[tuple[bytes, str]]]:
    """``(hash, text)`` pairs cut into embedder calls of at most ``max_size``, longest texts first.

    Sorted as a whole, each call holds texts of similar length, so the model pads little, while a
    crash still loses at most one call. The calls are of equal size (100 texts at 64 → 50 + 50, not
    64 + 36): a small last call wastes the model.
    """
    ordered = sorted(items, key=lambda item: -len(item[1]))
    if not ordered:
        return []
    calls = -(-len(ordered) // max_size)
    size = -(-len(ordered) // calls)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A stored chunk without a vector: its row id and the text the embedder gets."""

    id: int
    text: str


async def pending_chunks(conn: AsyncConnection, job: uuid.UUID, claim: ledger.BatchClaim) -> list[PendingChunk]:
    """The batch's stored chunks that still have no vector (all of them before its first embedder call)."""
    rows = await conn.execute(
        text(
            "SELECT c.id, c.header, c.content FROM files f JOIN chunks c ON c.file_id = f.id "
            "WHERE f.repository_id = :repository_id AND f.path = ANY(CAST(:paths AS text[])) AND f.job_id = :job_id "
            "AND c.embedding IS NULL ORDER BY c.id"
        ),
        {"repository_id": claim.repository_id, "paths": [entry["path"] for entry in claim.files], "job_id": job},
    )
    return [PendingChunk(row.id, embedding_text(row.header, row.content)) for row in rows]


async def fill_from_cache(
    conn: AsyncConnection, embedder: str, ids: Sequence[int], hashes: Sequence[bytes]
) -> list[int]:
    """Give the chunks ``ids`` (still without a vector) the cached vector of their text; returns the ids filled."""
    if not ids:
        return []
    rows = await conn.execute(
        text(
            "UPDATE chunks c SET embedding = e.embedding "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:hashes AS bytea[])) AS m(id, text_hash) "
            "JOIN embedding_cache e ON e.embedder = :embedder AND e.text_hash = m.text_hash "
            "WHERE c.id = m.id AND c.embedding IS NULL RETURNING c.id"
        ),
        {"ids": list(ids), "hashes": list(hashes), "embedder": embedder},
    )
    return [row.id for row in rows]


async def save_vectors(
    conn: AsyncConnection,
    res: Resources,
    job: uuid.UUID,
    batch_no: int,
    chunks: Sequence[PendingChunk],
    hashes: Sequence[bytes],
    *,
    embedded: int = 0,
    cached: int = 0,
) -> int:
    """Store the vectors of ``chunks`` (their texts' vectors are in the cache by now), count them on
    the batch and the job, and move the job's progress; returns the chunks given a vector.

    Rows are locked job first (the counters), then the batch, like every other writer.
    """
    filled = await fill_from_cache(conn, res.embedder.name, [chunk.id for chunk in chunks], hashes)
    row = await jobs.add_vectors(conn, job, len(filled))
    if row is not None and row["status"] in jobs.LIVE_STATUSES:
        await jobs.record_current_progress(conn, job, before=int(row["progress_percentage"]))
    await ledger.count_embedded(conn, job, batch_no, embedded=embedded, cached=cached, vectors=len(filled))
    return len(filled)


def next_call_size(remaining: int, limit: int) -> int:
    """The next embedder call's size: at most ``limit``, the remaining calls of equal size (100
    texts at 64 → 50 + 50, not 64 + 36: a small last call wastes the model)."""
    calls = -(-remaining // max(limit, 1))
    return -(-remaining // calls) if calls else 0


async def store_call(
    res: Resources, job: uuid.UUID, batch_no: int, chunks: Sequence[PendingChunk], hashes: Sequence[bytes], texts: int
) -> bool:
    """Give one embedder call's ``chunks`` their (already cached) vectors with the counters and the
    job's progress, in one transaction; False when the job stopped running (nothing is stored then)."""
    async with res.engine.begin() as conn:
        if not await jobs.lock_live(conn, job):
            return False
        await save_vectors(conn, res, job, batch_no, chunks, hashes, embedded=texts)
    return True


async def embed_texts(res: Resources, job: uuid.UUID, batch_no: int, chunks: Sequence[PendingChunk]) -> bool:
    """Give ``chunks`` their vectors: cached ones from the database, the rest from the embedder.

    Each embedder call's vectors are committed to the cache at once, then to the chunks with the
    batch's and the job's counters while the next call runs, so progress moves per call, the model
    does not wait for the database between calls, and a redelivered batch resumes after its last
    finished call. Returns False when the job stopped running between two calls (cancellation).
    """
    hashes = [embedding_cache.text_hash(chunk.text) for chunk in chunks]
    name = res.embedder.name
    # Texts embedded since the batch was written (by another batch, an earlier run of this one).
    async with res.engine.begin() as conn:
        if not await jobs.lock_live(conn, job):
            return False
        filled = set(await fill_from_cache(conn, name, [chunk.id for chunk in chunks], hashes))
        if filled:
            row = await jobs.add_vectors(conn, job, len(filled))
            if row is not None and row["status"] in jobs.LIVE_STATUSES:
                await jobs.record_current_progress(conn, job, before=int(row["progress_percentage"]))
            await ledger.count_embedded(conn, job, batch_no, vectors=len(filled))
    by_hash: dict[bytes, list[PendingChunk]] = {}
    missing: dict[bytes, str] = {}
    for chunk, digest in zip(chunks, hashes, strict=True):
        if chunk.id not in filled:
            by_hash.setdefault(digest, []).append(chunk)
            missing.setdefault(digest, chunk.text)
    ordered = sorted(missing.items(), key=lambda item: -len(item[1]))
    position = 0
    # The previous call's vectors going to their chunks (with the counters and progress) while the
    # model computes the next call: the model does not wait for that transaction.
    storing: asyncio.Task[bool] | None = None
    try:
        while position < len(ordered):
            size = next_call_size(len(ordered) - position, res.embed_pace.call_size(res.settings.embed_batch_size))
            part = ordered[position : position + size]
            position += size
            began = time.perf_counter()
            vectors = await metrics.timed_embed(res.embedder.embed, [body for _, body in part])
            res.embed_pace.observe(len(part), time.perf_counter() - began)
            async with res.engine.begin() as conn:
                # The backend answered: a job blocked on it runs again (job row first: the lock order).
                await jobs.unblock_job(conn, job, backend=name)
                # Cached even for a stopped job: the next job of the repository needs these texts
                # too. Committed before the next call starts, so a crash still loses at most the
                # call in the embedder's hands: a redelivered batch fills these chunks from the cache.
                await embedding_cache.store(conn, name, [digest for digest, _ in part], list(vectors))
                live = await jobs.job_status(conn, job) in jobs.LIVE_STATUSES
            if storing is not None:
                # One call's chunks at a time, in order (ran during this call: normally done by now).
                live = await storing and live
                storing = None
            if not live:
                return False
            part_chunks = [chunk for digest, _ in part for chunk in by_hash[digest]]
            part_hashes = [digest for digest, _ in part for _ in by_hash[digest]]
            storing = asyncio.create_task(store_call(res, job, batch_no, part_chunks, part_hashes, len(part)))
        if storing is not None:
            done, storing = storing, None
            if not await done:
                return False
    finally:
        if storing is not None:
            # An embedder call failed while the previous call's chunks were being stored: let that
            # finish (or fail) before the batch is handed on or retried.
            await asyncio.gather(storing, return_exceptions=True)
    async with res.engine.begin() as conn:
        await ledger.count_embedded(conn, job, batch_no, cached=len(filled))
    metrics.texts_needed(cached=len(filled), embedded=len(missing))
    return True


async def planned_embedder(res: Resources, job: uuid.UUID) -> tuple[uuid.UUID, str | None, int | None] | None:
    """``(repository id, embedder, dimension)`` the job's repository was planned for; None if the job is gone."""
    async with res.engine.connect() as conn:
        target = (
            await conn.execute(
                text(
                    "SELECT j.repository_id, r.embedder, r.dimension FROM indexing_jobs j "
                    "JOIN repositories r ON r.id = j.repository_id WHERE j.id = :id"
                ),
                {"id": job},
            )
        ).first()
    return None if target is None else (target.repository_id, target.embedder, target.dimension)


#: Dramatiq priority of the embed stage (lower numbers first): a free thread takes a chunk, write
#: or record message before an embed message, so the text phase and the recording of finished
#: vectors never queue behind the model's work.
EMBED_PRIORITY = 100


@stage_actor(queue_name=EMBED_QUEUE, time_limit=1_800_000, priority=EMBED_PRIORITY, **STAGE_RETRIES)
@metrics.timed_stage("embed")
async def embed_batch(job_id: str, batch_no: int, token: str, payload: dict[str, Any] | None = None) -> None:
    """Embed the batch's stored chunks that still lack a vector, then hand it to the coordinator.

    ``payload`` is ignored: embed messages of the one-phase pipeline carried the chunks; their
    batches were sent back to the chunk stage by migration 0006, so such a message is stale.
    """
    res = await worker_resources().get()
    job, current = uuid.UUID(job_id), uuid.UUID(token)
    with log_context(job_id=job_id, batch=batch_no, stage="embed"):
        # Claim only when this process may call the embedder: a batch waiting here is not started,
        # so a crash does not make it count as work done twice.
        async with worker_resources().embed_slot():
            async with res.engine.begin() as conn:
                claim = await ledger.claim(
                    conn, job, batch_no, state="searchable", token=current, run_column="embed_runs"
                )
            if claim is None or claim.job_status not in jobs.LIVE_STATUSES:
                logger.debug("dropping embed message (stale or job not running)")
                return
            target = await planned_embedder(res, job)
            if target is None:
                return
            if await refuse_foreign_vectors(res, job, batch_no, target[1], target[2]):
                return
            async with res.engine.connect() as conn:
                chunks = await pending_chunks(conn, job, claim)
            try:
                done = await embed_texts(res, job, batch_no, chunks)
            except EmbedderRejectedError as error:
                # Up but refusing (wrong vector size, model not found): waiting cannot help.
                async with res.engine.begin() as conn:
                    finished = await jobs.finish_job(conn, job, jobs.Failed(f"embedding failed for good: {error}"))
                if finished.ended:
                    logger.error("embedding service refused batch %d: job failed (%s)", batch_no, error)
                await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)
                return
            except EmbedderUnavailableError as error:
                await wait_for_embedder(res, job, batch_no, current, str(error))
                return
        if not done:
            logger.info("job no longer running; stopped mid-batch")
            return

        async def send(next_token: uuid.UUID) -> None:
            await publish(record_message(job, batch_no, next_token))

        async with res.engine.begin() as conn:
            await ledger.hop(
                conn, job, batch_no, from_state="searchable", token=current, to_state="embedded", send_next=send
            )


def _readable(payload: dict[str, Any]) -> BatchPayload | None:
    """The message's payload, or None (logged) when this worker cannot read it: see
    :class:`actors.messages.UnsupportedPayloadError` for how the batch is recovered."""
    try:
        return decode_payload(payload)
    except UnsupportedPayloadError as error:
        logger.warning("dropping a message this worker cannot read (%s); upkeep re-sends the batch", error)
        return None


def blocked_retry_seconds(timeout_seconds: float) -> float:
    """How long a blocked batch waits before asking the embedder again: often enough to resume
    within seconds of the service's return, rarely enough not to hammer a service that is down."""
    return min(5.0, max(0.5, timeout_seconds / 10))


async def wait_for_embedder(res: Resources, job: uuid.UUID, batch_no: int, token: uuid.UUID, error: str) -> None:
    """The embedder stayed down through its own retries: block the job and try the batch again later.

    The batch keeps its state and gets a fresh token with a delayed copy of its message (a hop
    from ``searchable`` to ``searchable``), so the ledger's rule holds: one live message per batch.
    Past ``BLOCKED_TIMEOUT_SECONDS`` of waiting the job fails with a message naming the backend.
    Vectors already committed stay: the retry embeds only the chunks still without one.
    """
    name = res.embedder.name
    timeout = res.settings.blocked_timeout_seconds
    delay = blocked_retry_seconds(timeout)

    async def send(next_token: uuid.UUID) -> None:
        await publish(embed_message(job, batch_no, next_token), delay_ms=int(delay * 1000))

    finished = None
    async with res.engine.begin() as conn:
        waited = await jobs.block_job(conn, job, backend=name, error=error)
        if waited is None:
            return
        if waited >= timeout:
            finished = await jobs.finish_job(conn, job, jobs.Failed(jobs.blocked_failure(name, waited, error)))
        else:
            # This attempt embedded nothing: it is not counted as work done on the batch.
            await ledger.uncount_run(conn, job, batch_no, token=token, run_column="embed_runs")
            await ledger.hop(
                conn, job, batch_no, from_state="searchable", token=token, to_state="searchable", send_next=send
            )
    if finished is not None:
        if finished.ended:
            logger.error("embedding service %s down for %.0f s: job failed (%s)", name, waited, error)
        await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)
    else:
        logger.warning("embedding service %s unavailable; job blocked %.0f s, retry in %.1f s", name, waited, delay)


#: Column order of the records :func:`store_batch` copies into ``chunks``.
CHUNK_COPY_COLUMNS = (
    "file_id",
    "repository_id",
    "ordinal",
    "start_line",
    "end_line",
    "language",
    "symbol",
    "content",
    "header",
    "embedding",
)


async def cached_vectors(
    conn: AsyncConnection, batch: BatchPayload, embedder: str | None, dimension: int | None
) -> list[Any | None]:
    """One entry per chunk of ``batch``: its text's cached vector for ``embedder``, or None.

    A vector of another dimension than the repository's (a cache row of a same-named model
    configured with another size) is not used: the vector phase embeds that chunk again.
    """
    texts = [embedding_text(chunk.header, chunk.content) for chunk in batch.chunks]
    if embedder is None or not texts:
        return [None] * len(texts)
    hashes = [embedding_cache.text_hash(body) for body in texts]
    known = await embedding_cache.lookup(conn, embedder, hashes)
    out: list[Any | None] = []
    for digest in hashes:
        vector = known.get(digest)
        out.append(vector if vector is not None and (dimension is None or len(vector) == dimension) else None)
    return out


async def store_batch(
    conn: AsyncConnection,
    repository_id: uuid.UUID,
    job: uuid.UUID,
    payload: BatchPayload,
    vectors: Sequence[Any | None] | None = None,
) -> int:
    """Replace the batch's files and their chunks; returns the number of chunks written.

    ``vectors`` has one entry per chunk (None: stored without a vector, for the vector phase);
    omitted, every chunk is stored without one.
    """
    files = payload.files
    if not files:
        return 0
    if vectors is None:
        vectors = [None] * sum(len(item.chunks) for item in files)
    rows = await conn.execute(
        text(
            "INSERT INTO files (repository_id, path, content_hash, language, size_bytes, line_count, role, job_id, "
            "indexed_at) SELECT :repository_id, * , :job_id, now() FROM unnest("
            "CAST(:paths AS text[]), CAST(:hashes AS text[]), CAST(:languages AS text[]), "
            "CAST(:sizes AS bigint[]), CAST(:lines AS integer[]), CAST(:roles AS text[])) "
            "ON CONFLICT (repository_id, path) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
            "language = EXCLUDED.language, size_bytes = EXCLUDED.size_bytes, line_count = EXCLUDED.line_count, "
            "role = EXCLUDED.role, job_id = EXCLUDED.job_id, indexed_at = now() RETURNING id, path"
        ),
        {
            "repository_id": repository_id,
            "job_id": job,
            "paths": [item.path for item in files],
            "hashes": [item.hash for item in files],
            "languages": [item.language for item in files],
            "sizes": [item.size for item in files],
            "lines": [item.lines for item in files],
            "roles": [file_role(item.path) for item in files],
        },
    )
    file_ids = {row.path: row.id for row in rows}
    await conn.execute(text("DELETE FROM chunks WHERE file_id = ANY(:ids)"), {"ids": list(file_ids.values())})
    records: list[tuple[Any, ...]] = []
    position = 0
    for item in files:
        file_id = file_ids[item.path]
        for ordinal, chunk in enumerate(item.chunks):
            records.append(
                (
                    file_id,
                    repository_id,
                    ordinal,
                    chunk.start_line,
                    chunk.end_line,
                    item.language,
                    chunk.symbol,
                    chunk.content,
                    chunk.header,
                    vectors[position],
                )
            )
            position += 1
    if position != len(vectors):
        raise ValueError(f"payload has {position} chunks but {len(vectors)} vectors")
    if records:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(
            "chunks",
            records=records,
            columns=CHUNK_COPY_COLUMNS,
        )
    return len(records)


def foreign_vectors(
    made_by: str | None, made_dimension: int | None, embedder: str | None, dimension: int | None
) -> str | None:
    """Why vectors of ``made_by`` (``made_dimension``) do not belong to a repository planned for
    ``embedder`` (``dimension``), or None when they do.

    The planner records the embedder it was configured with; an embed worker configured with
    another model (even of the same dimension) makes vectors that search would compare with the
    wrong query embedding, silently. A repository planned before the record is accepted.
    """
    if embedder is None or made_by is None:
        return None
    if made_by == embedder and (dimension is None or made_dimension is None or made_dimension == dimension):
        return None
    return (
        f"the embed worker makes {made_by} vectors ({made_dimension} dimensions) but the job was planned for "
        f"{embedder} ({dimension} dimensions): workers run with different CODEBASE_MCP_EMBEDDER / "
        "CODEBASE_MCP_OLLAMA_MODEL settings; give every worker the same embedder settings and index again"
    )


async def refuse_foreign_vectors(
    res: Resources, job: uuid.UUID, batch_no: int, embedder: str | None, dimension: int | None
) -> bool:
    """Fail the job instead of storing this worker's vectors for a repository planned for another
    model; True when it was refused."""
    reason = foreign_vectors(res.embedder.name, res.embedder.dimension, embedder, dimension)
    if reason is None:
        return False
    async with res.engine.begin() as conn:
        finished = await jobs.finish_job(conn, job, jobs.Failed(f"batch {batch_no}: {reason}"))
    if finished.ended:
        logger.error("job failed: %s", reason)
    await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)
    return True


@stage_actor(queue_name=WRITE_QUEUE, time_limit=600_000, **STAGE_RETRIES)
@metrics.timed_stage("write")
async def write_batch(job_id: str, batch_no: int, token: str, payload: dict[str, Any]) -> None:
    """Store the batch's files and chunks (vectors from the cache where known) and mark it written
    in one transaction, then hand it to the coordinator: its text is searchable once recorded."""
    res = await worker_resources().get()
    job, current = uuid.UUID(job_id), uuid.UUID(token)
    with log_context(job_id=job_id, batch=batch_no, stage="write"):
        batch = _readable(payload)
        if batch is None:
            return
        target = await planned_embedder(res, job)
        if target is None:
            return
        repository_id, embedder, dimension = target

        async def store(conn: AsyncConnection) -> None:
            cached = await cached_vectors(conn, batch, embedder, dimension)
            # A file PostgreSQL refuses moves to stored.failed (actors/storing.py).
            chunks, stored, vectors = await store_rejecting_bad_files(
                conn, store_batch, repository_id, job, batch, cached
            )
            await ledger.set_batch_counts(
                conn,
                job,
                batch_no,
                indexed=len(stored.files),
                skipped=len(stored.skipped),
                failed=len(stored.failed),
                chunks=chunks,
                chunks_embedded=sum(vector is not None for vector in vectors),
            )
            for relative, reason in stored.failed:
                logger.warning("file not indexed: %s (%s)", relative, reason)
            if stored.skipped or stored.failed:
                # The reasons, per file, for whoever asks why the counters say skipped/failed.
                await jobs.add_event(
                    conn,
                    job,
                    "files_not_indexed",
                    {"batch": batch_no, "skipped": list(stored.skipped), "failed": list(stored.failed)},
                )

        async def send(next_token: uuid.UUID) -> None:
            await publish(record_message(job, batch_no, next_token))

        try:
            async with res.engine.begin() as conn:
                await ledger.hop(
                    conn,
                    job,
                    batch_no,
                    from_state="chunked",
                    token=current,
                    to_state="written",
                    send_next=send,
                    require_job_live=True,
                    work=store,
                    run_column="write_runs",
                )
        except ledger.JobNotLiveError as stopped:
            logger.debug("dropping write message (%s)", stopped)
