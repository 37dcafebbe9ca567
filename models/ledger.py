"""The batch ledger: one row per file batch of a job, and the rules that move a batch along.

A job has two phases (issue 12). The text phase moves a batch ``pending → queued → chunked →
written → searchable``: chunked, stored (files and chunks, with the vectors the embedding cache
already knows), then recorded by the coordinator, after which its chunks are full-text searchable.
The vector phase moves it ``searchable → embedded → recorded``: the embed stage gives every stored
chunk still without a vector one (committed per embedder call), the coordinator records it.

The row's ``token`` names the one message allowed to move it on: each hop publishes the next
message carrying a fresh token and stores that token in the same transaction, while holding the
row lock. So:

- a redelivered message (worker killed mid-stage) still holds the current token and redoes only
  its own stage (the embed stage only the chunks still without a vector);
- a message published by a transaction that then failed holds a token the row never stored and is
  dropped on arrival;
- the write stage stores chunks and marks the batch ``written`` in one transaction, so a
  duplicate write message finds the batch already written and does nothing.

The only writer of ``index_batches``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models.lifecycle import IN_FLIGHT_STAGE, LIVE_STATUSES, TEXT_WINDOW_STATES

#: What may be counted (and uncounted) as a run of a stage on a batch.
RUN_COLUMNS = ("chunk_runs", "embed_runs", "write_runs")

SendNext = Callable[[uuid.UUID], Awaitable[None]]


class JobNotLiveError(RuntimeError):
    """The job stopped (cancelled, failed) while a stage worked: its transaction must roll back."""


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    files: list[dict[str, Any]]  # [{"path": str, "size": int}]
    byte_count: int


def split_into_batches(files: Sequence[tuple[str, int]], *, max_files: int, max_bytes: int) -> list[PlannedBatch]:
    """Group ``(path, size)`` pairs into batches bounded by file count and total bytes."""
    batches: list[PlannedBatch] = []
    current: list[dict[str, Any]] = []
    current_bytes = 0
    for path, size in files:
        if current and (len(current) >= max_files or current_bytes + size > max_bytes):
            batches.append(PlannedBatch(current, current_bytes))
            current, current_bytes = [], 0
        current.append({"path": path, "size": size})
        current_bytes += size
    if current:
        batches.append(PlannedBatch(current, current_bytes))
    return batches


@dataclass(frozen=True, slots=True)
class IndexDiff:
    """What a job must do to bring a repository's index in line with the files on disk."""

    changed: list[str]  # new or modified paths, in the order given: these go into batches
    unchanged: int  # paths whose content hash equals the indexed one: nothing to do
    removed: list[str]  # indexed paths no longer among the indexable files: their rows go


def diff_against_index(on_disk: Mapping[str, str | None], indexed: Mapping[str, str]) -> IndexDiff:
    """Compare ``path -> sha256`` of the indexable files with ``path -> content_hash`` of the index.

    A hash of None (the file could not be read while planning) counts as changed, so that the
    chunk stage reads it again and reports why it fails.
    """
    changed = [path for path, digest in on_disk.items() if digest is None or indexed.get(path) != digest]
    removed = [path for path in indexed if path not in on_disk]
    return IndexDiff(changed, len(on_disk) - len(changed), removed)


async def indexed_files(conn: AsyncConnection, repository_id: uuid.UUID) -> dict[str, str]:
    """``path -> content_hash`` of every file of the repository in the index.

    A file with a chunk still without a vector (its job was cancelled or failed between the two
    phases) maps to ``""``, so the next job counts it as changed and gives it its vectors.
    """
    rows = await conn.execute(
        text(
            "SELECT f.path, CASE WHEN EXISTS (SELECT 1 FROM chunks c WHERE c.file_id = f.id AND c.embedding IS NULL) "
            "THEN '' ELSE f.content_hash END AS content_hash FROM files f WHERE f.repository_id = :id"
        ),
        {"id": repository_id},
    )
    return {row.path: row.content_hash for row in rows}


async def remove_files(conn: AsyncConnection, repository_id: uuid.UUID, paths: Sequence[str] | None) -> int:
    """Delete files (and, by cascade, their chunks) of the repository; ``None`` deletes them all."""
    if paths is not None and not paths:
        return 0
    result = await conn.execute(
        text(
            "DELETE FROM files WHERE repository_id = :id "
            "AND (CAST(:paths AS text[]) IS NULL OR path = ANY(CAST(:paths AS text[])))"
        ),
        {"id": repository_id, "paths": list(paths) if paths is not None else None},
    )
    return int(result.rowcount or 0)


async def write_plan(conn: AsyncConnection, job_id: uuid.UUID, batches: Sequence[PlannedBatch]) -> None:
    """Insert the job's batches as ``pending`` ledger rows, numbered from 0."""
    if not batches:
        return
    await conn.execute(
        text(
            "INSERT INTO index_batches (job_id, batch_no, files, file_count, byte_count, state) "
            "SELECT :job_id, ordinality - 1, item, jsonb_array_length(item), size, 'pending' "
            "FROM unnest(CAST(:files AS jsonb[]), CAST(:sizes AS bigint[])) WITH ORDINALITY AS plan(item, size)"
        ),
        {
            "job_id": job_id,
            "files": [json.dumps(batch.files) for batch in batches],
            "sizes": [batch.byte_count for batch in batches],
        },
    )


async def batches_to_dispatch(conn: AsyncConnection, job_id: uuid.UUID, window: int) -> list[int]:
    """Pending batches that fit in the job's text window (lowest numbers first), locked.

    Only the text phase counts: batches waiting for the embedder leave room for the next ones.
    """
    in_flight = int(
        await conn.scalar(
            text("SELECT count(*) FROM index_batches WHERE job_id = :job_id AND state = ANY(:states)"),
            {"job_id": job_id, "states": list(TEXT_WINDOW_STATES)},
        )
        or 0
    )
    if in_flight >= window:
        return []
    rows = await conn.execute(
        text(
            "SELECT batch_no FROM index_batches WHERE job_id = :job_id AND state = 'pending' "
            "ORDER BY batch_no LIMIT :free FOR UPDATE SKIP LOCKED"
        ),
        {"job_id": job_id, "free": window - in_flight},
    )
    return [row.batch_no for row in rows]


async def mark_dispatched(conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> None:
    await conn.execute(
        text(
            "UPDATE index_batches SET state = 'queued', token = :token, dispatches = dispatches + 1, "
            "dispatched_at = now(), updated_at = now() WHERE job_id = :job_id AND batch_no = :batch_no"
        ),
        {"job_id": job_id, "batch_no": batch_no, "token": token},
    )


@dataclass(frozen=True, slots=True)
class BatchClaim:
    files: list[dict[str, Any]]
    job_status: str
    repository_id: uuid.UUID
    repo_path: str


async def _lock_batch(conn: AsyncConnection, job_id: uuid.UUID, batch_no: int) -> Any:
    """Lock the row by key, waiting for any transaction that holds it.

    Locking by key alone matters: a message published inside a still-open transaction can arrive
    before that transaction commits. An ``UPDATE ... WHERE token = :new`` would evaluate the old
    row version, not match, and skip the row without waiting; ``SELECT ... FOR UPDATE`` by key
    waits for the commit and then returns the new version.
    """
    return (
        await conn.execute(
            text(
                "SELECT state, token, files, file_count, files_indexed, files_skipped, files_failed, chunks_created, "
                "chunks_embedded "
                "FROM index_batches WHERE job_id = :job_id AND batch_no = :batch_no FOR UPDATE"
            ),
            {"job_id": job_id, "batch_no": batch_no},
        )
    ).first()


async def _count_run(conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, run_column: str) -> None:
    if run_column not in RUN_COLUMNS:
        raise ValueError(run_column)
    await conn.execute(
        text(
            f"UPDATE index_batches SET {run_column} = {run_column} + 1, updated_at = now() "
            "WHERE job_id = :job_id AND batch_no = :batch_no"
        ),
        {"job_id": job_id, "batch_no": batch_no},
    )


async def claim(
    conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, *, state: str, token: uuid.UUID, run_column: str
) -> BatchClaim | None:
    """Check that this message may work on the batch and count the run; None means drop the message.

    ``run_column`` is one of ``chunk_runs``, ``embed_runs``, ``write_runs``: the counters behind the
    duplicate-work figures.
    """
    job = (
        await conn.execute(
            text("SELECT status, repository_id, repo_path FROM indexing_jobs WHERE id = :job_id"), {"job_id": job_id}
        )
    ).first()
    row = await _lock_batch(conn, job_id, batch_no)
    if job is None or row is None or row.state != state or row.token != token:
        return None
    await _count_run(conn, job_id, batch_no, run_column)
    return BatchClaim(row.files, job.status, job.repository_id, job.repo_path)


async def hop(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    batch_no: int,
    *,
    from_state: str,
    token: uuid.UUID,
    to_state: str,
    send_next: SendNext,
    require_job_live: bool = False,
    work: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    run_column: str | None = None,
) -> bool:
    """Move a batch one stage on, publishing the next message under the row lock.

    ``work`` runs inside the same transaction after the checks (the write stage stores its chunks
    there); ``run_column`` is counted here when the stage's work is the transaction itself.
    Returns False (and publishes nothing) when the message is stale.

    With ``require_job_live``, the job must still be live (running or blocked) once the work is
    done: checked under a share lock on the job's row, which a cancel's update waits for, so
    nothing is stored after a cancel commits. Otherwise :class:`JobNotLiveError` is raised and the
    caller's transaction, work included, rolls back. The share lock is taken last, after the
    batch's, so a cancel waits milliseconds rather than a whole write; this cannot deadlock, as no
    job-row locker waits for a batch being written (record messages target written or embedded
    batches only, dispatch and upkeep skip locked rows).
    """
    current = await _lock_batch(conn, job_id, batch_no)
    if current is None or current.state != from_state or current.token != token:
        return False
    if run_column is not None:
        await _count_run(conn, job_id, batch_no, run_column)
    if work is not None:
        await work(conn)
    if require_job_live:
        status = await conn.scalar(
            text("SELECT status FROM indexing_jobs WHERE id = :job_id FOR SHARE"), {"job_id": job_id}
        )
        if status not in LIVE_STATUSES:
            raise JobNotLiveError(f"job {job_id} is {status}: batch {batch_no} not stored")
    next_token = uuid.uuid4()
    await send_next(next_token)
    await conn.execute(
        text(
            "UPDATE index_batches SET state = :to_state, token = :token, updated_at = now(), "
            "written_at = CASE WHEN :to_state = 'written' THEN now() ELSE written_at END "
            "WHERE job_id = :job_id AND batch_no = :batch_no"
        ),
        {"job_id": job_id, "batch_no": batch_no, "to_state": to_state, "token": next_token},
    )
    return True


async def set_batch_counts(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    batch_no: int,
    *,
    indexed: int,
    skipped: int,
    failed: int,
    chunks: int,
    chunks_embedded: int = 0,
) -> None:
    """The write stage's figures; ``chunks_embedded`` counts chunks stored with a cached vector."""
    await conn.execute(
        text(
            "UPDATE index_batches SET files_indexed = :indexed, files_skipped = :skipped, files_failed = :failed, "
            "chunks_created = :chunks, chunks_embedded = :embedded WHERE job_id = :job_id AND batch_no = :batch_no"
        ),
        {
            "job_id": job_id,
            "batch_no": batch_no,
            "indexed": indexed,
            "skipped": skipped,
            "failed": failed,
            "chunks": chunks,
            "embedded": chunks_embedded,
        },
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    file_count: int
    files_indexed: int
    files_skipped: int
    files_failed: int
    chunks_created: int
    chunks_embedded: int = 0
    #: ``text``: the batch's text was recorded (it is now searchable); ``vectors``: its vectors were.
    phase: str = "vectors"


async def take_for_recording(
    conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, token: uuid.UUID, *, send_embed: SendNext
) -> Recorded | None:
    """Record a batch's text (``written → searchable``, publishing its embed message through
    ``send_embed``) or its vectors (``embedded → recorded``) and return its counters; None for a
    stale or repeated message."""
    row = await _lock_batch(conn, job_id, batch_no)
    if row is None or row.token != token or row.state not in ("written", "embedded"):
        return None
    if row.state == "written":
        next_token = uuid.uuid4()
        await send_embed(next_token)
        await conn.execute(
            text(
                "UPDATE index_batches SET state = 'searchable', token = :token, updated_at = now() "
                "WHERE job_id = :job_id AND batch_no = :batch_no"
            ),
            {"job_id": job_id, "batch_no": batch_no, "token": next_token},
        )
        return Recorded(
            row.file_count,
            row.files_indexed,
            row.files_skipped,
            row.files_failed,
            row.chunks_created,
            row.chunks_embedded,
            phase="text",
        )
    await conn.execute(
        text(
            "UPDATE index_batches SET state = 'recorded', recorded_at = now(), updated_at = now(), token = NULL "
            "WHERE job_id = :job_id AND batch_no = :batch_no"
        ),
        {"job_id": job_id, "batch_no": batch_no},
    )
    return Recorded(
        row.file_count, row.files_indexed, row.files_skipped, row.files_failed, row.chunks_created, row.chunks_embedded
    )


async def stage_counts(conn: AsyncConnection, job_id: uuid.UUID) -> dict[str, int]:
    rows = await conn.execute(
        text("SELECT state, count(*) AS n FROM index_batches WHERE job_id = :job_id GROUP BY state"),
        {"job_id": job_id},
    )
    return {row.state: int(row.n) for row in rows}


async def stale_batches(conn: AsyncConnection, *, older_than_seconds: float) -> list[tuple[uuid.UUID, int, str]]:
    """In-flight batches of live jobs that have not moved for too long: their message was lost.

    A ``searchable`` batch waits in the embed queue behind every batch the text phase ran ahead
    with, for as long as the model takes: it counts as lost only when no batch anywhere has moved
    for that long (while the embed stage makes progress, its message is simply further back).
    """
    rows = await conn.execute(
        text(
            "SELECT b.job_id, b.batch_no, b.state FROM index_batches b JOIN indexing_jobs j ON j.id = b.job_id "
            "WHERE j.status = ANY(:live) AND b.state = ANY(:states) "
            "AND b.updated_at < now() - make_interval(secs => :secs) "
            "AND (b.state <> 'searchable' OR NOT EXISTS (SELECT 1 FROM index_batches o "
            "WHERE o.updated_at >= now() - make_interval(secs => :secs))) FOR UPDATE OF b SKIP LOCKED"
        ),
        {"live": list(LIVE_STATUSES), "states": list(IN_FLIGHT_STAGE), "secs": older_than_seconds},
    )
    return [(row.job_id, row.batch_no, row.state) for row in rows]


async def replace_token(conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, token: uuid.UUID) -> None:
    await conn.execute(
        text("UPDATE index_batches SET token = :token, updated_at = now() WHERE job_id = :job_id AND batch_no = :n"),
        {"job_id": job_id, "n": batch_no, "token": token},
    )


async def count_embedded(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    batch_no: int,
    *,
    embedded: int = 0,
    cached: int = 0,
    vectors: int = 0,
) -> None:
    """Add to the batch's embedder work: texts sent to the embedder, texts served from the cache,
    chunks given a vector. Moves ``updated_at``: the batch is being worked on."""
    await conn.execute(
        text(
            "UPDATE index_batches SET texts_embedded = texts_embedded + :embedded, "
            "texts_cached = texts_cached + :cached, chunks_embedded = chunks_embedded + :vectors, "
            "updated_at = now() WHERE job_id = :job_id AND batch_no = :n"
        ),
        {"job_id": job_id, "n": batch_no, "embedded": embedded, "cached": cached, "vectors": vectors},
    )


async def uncount_run(
    conn: AsyncConnection, job_id: uuid.UUID, batch_no: int, *, token: uuid.UUID, run_column: str
) -> None:
    """Take back a run counted by :func:`claim` that did no work (the embedder was down)."""
    if run_column not in RUN_COLUMNS:
        raise ValueError(run_column)
    await conn.execute(
        text(
            f"UPDATE index_batches SET {run_column} = greatest({run_column} - 1, 0) "
            "WHERE job_id = :job_id AND batch_no = :batch_no AND token = :token"
        ),
        {"job_id": job_id, "batch_no": batch_no, "token": token},
    )
