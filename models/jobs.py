"""Job rules, in the database: admission, the running-slot limit, cancel, status, listing, events.

The only writer of ``indexing_jobs``: status, phase, progress and counters change here, with the
values and messages of :mod:`models.lifecycle`. Every function takes an open ``AsyncConnection``
inside a transaction the caller owns, so that a state change and the broker message that goes
with it can be committed together.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from models.lifecycle import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    WAITING_FOR_SLOT,
    WAITING_FOR_WORKER,
    BatchProgress,
    JobStatus,
    JobTally,
    Phase,
    blocked_failure,
    cancelled_message,
    completion_message,
    failed_message,
    progress_of,
    resumed_message,
    searchable_fraction,
    semantic_fraction,
    waiting_message,
)
from models.logs import redact

#: Serialises admission and promotion so that the running-slot limit is never exceeded.
_ADMISSION_LOCK_KEY = 0x0C0DE10B5

JOB_COLUMNS = (
    "id, repository_id, repo_path, name, status, phase, progress_percentage, progress_message, files_total, "
    "files_indexed, files_skipped, files_failed, files_unchanged, files_removed, chunks_created, batches_total, "
    "batches_done, files_searchable, batches_searchable, chunks_embedded, error_message, "
    "created_at, started_at, planned_at, completed_at, cancelled_at, failed_at, updated_at"
)


class JobNotFoundError(LookupError):
    """No job has that id."""


class JobStateError(RuntimeError):
    """The job's status does not allow the requested change (for example cancelling a completed job)."""


class JobBusyError(JobStateError):
    """The job's row stayed locked (a worker frozen mid-transaction holds it): nothing was changed."""


#: How long a cancel waits for the job's row. Workers hold it for milliseconds; one stopped
#: mid-transaction (SIGSTOP, a debugger) would hold it, and the tool call, without limit.
CANCEL_LOCK_TIMEOUT_MS = 5000
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: uuid.UUID
    status: str
    existing: bool  # True: an active job for this repository already existed and is returned


async def add_event(conn: AsyncConnection, job_id: uuid.UUID, event: str, detail: dict[str, Any] | None = None) -> None:
    await conn.execute(
        text("INSERT INTO job_events (job_id, event, detail) VALUES (:job_id, :event, CAST(:detail AS jsonb))"),
        {"job_id": job_id, "event": event, "detail": json.dumps(detail) if detail is not None else None},
    )


async def admit_job(conn: AsyncConnection, *, repo_path: str, name: str) -> Admission:
    """Create a job for ``repo_path`` (running if a slot is free, else pending), or return the active one."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADMISSION_LOCK_KEY})
    existing = (
        await conn.execute(
            text("SELECT id, status FROM indexing_jobs WHERE repo_path = :path AND status = ANY(:active)"),
            {"path": repo_path, "active": list(ACTIVE_STATUSES)},
        )
    ).first()
    if existing is not None:
        return Admission(existing.id, existing.status, existing=True)
    repository_id = await conn.scalar(
        text(
            "INSERT INTO repositories (id, path, name) VALUES (:id, :path, :name) "
            "ON CONFLICT (path) DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ),
        {"id": uuid.uuid4(), "path": repo_path, "name": name},
    )
    running = await _live_count(conn)
    free = await _running_limit(conn) > running
    job_id = uuid.uuid4()
    status = JobStatus.RUNNING if free else JobStatus.PENDING
    await conn.execute(
        text(
            "INSERT INTO indexing_jobs (id, repository_id, repo_path, name, status, phase, progress_message, "
            "started_at) VALUES (:id, :repository_id, :path, :name, :status, :phase, :message, "
            "CASE WHEN :status = 'running' THEN now() END)"
        ),
        {
            "id": job_id,
            "repository_id": repository_id,
            "path": repo_path,
            "name": name,
            "status": status.value,
            "phase": Phase.SCANNING.value if free else Phase.QUEUED.value,
            "message": WAITING_FOR_WORKER if free else WAITING_FOR_SLOT,
        },
    )
    await add_event(conn, job_id, "created", {"repo_path": repo_path, "name": name})
    if free:
        await add_event(conn, job_id, "started")
    return Admission(job_id, status.value, existing=False)


async def _live_count(conn: AsyncConnection) -> int:
    return int(
        await conn.scalar(
            text("SELECT count(*) FROM indexing_jobs WHERE status = ANY(:live)"), {"live": list(LIVE_STATUSES)}
        )
        or 0
    )


async def _running_limit(conn: AsyncConnection) -> int:
    value = conn.info.get("max_concurrent_jobs")
    if value is None:
        raise RuntimeError("connection has no max_concurrent_jobs; use models.jobs.bind_limits()")
    return int(value)


def bind_limits(conn: AsyncConnection, *, max_concurrent_jobs: int) -> AsyncConnection:
    """Attach the running-job limit to a connection so admission and promotion read one value."""
    conn.info["max_concurrent_jobs"] = max_concurrent_jobs
    return conn


async def promote_pending(conn: AsyncConnection) -> list[uuid.UUID]:
    """Start the oldest pending jobs while running slots are free; returns the ids started."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADMISSION_LOCK_KEY})
    free = await _running_limit(conn) - await _live_count(conn)
    if free <= 0:
        return []
    rows = await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'running', started_at = now(), updated_at = now(), phase = 'scanning', "
            "progress_message = :message "
            "WHERE id IN (SELECT id FROM indexing_jobs WHERE status = 'pending' ORDER BY created_at LIMIT :free "
            "FOR UPDATE SKIP LOCKED) RETURNING id"
        ),
        {"free": free, "message": WAITING_FOR_WORKER},
    )
    started = [row.id for row in rows]
    for job_id in started:
        await add_event(conn, job_id, "started")
    return started


async def cancel_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping:
    """Mark the job cancelled at once; workers notice within seconds and stop.

    Raises:
        JobNotFoundError, JobStateError: unknown job, or a job already finished.
        JobBusyError: the row stayed locked for ``CANCEL_LOCK_TIMEOUT_MS``; the caller's
            transaction is aborted and nothing changed.
    """
    await conn.execute(text(f"SET LOCAL lock_timeout = {CANCEL_LOCK_TIMEOUT_MS}"))
    try:
        row = (
            await conn.execute(
                text(
                    "SELECT status, progress_percentage, files_indexed, chunks_created FROM indexing_jobs "
                    "WHERE id = :id FOR UPDATE"
                ),
                {"id": job_id},
            )
        ).first()
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise JobBusyError(
            f"cannot cancel job {job_id} now: its row is locked by a worker that has not let go for "
            f"{CANCEL_LOCK_TIMEOUT_MS / 1000:g} s (stopped or stuck?); nothing was changed, try again"
        ) from None
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    if row.status in TERMINAL_STATUSES:
        raise JobStateError(f"cannot cancel job {job_id}: it is already {row.status}")
    result = (
        (
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET status = 'cancelled', cancelled_at = now(), updated_at = now(), "
                    f"progress_message = :message WHERE id = :id RETURNING {JOB_COLUMNS}"
                ),
                {
                    "id": job_id,
                    "message": cancelled_message(
                        percentage=row.progress_percentage,
                        files_indexed=row.files_indexed,
                        chunks_created=row.chunks_created,
                    ),
                },
            )
        )
        .mappings()
        .one()
    )
    await add_event(conn, job_id, "cancelled", {"previous_status": row.status})
    return result


async def fail_job(conn: AsyncConnection, job_id: uuid.UUID, message: str) -> bool:
    """Fail an active job with ``message``; returns False if it had already finished.

    Actors call :func:`finish_job`, which says what to do after the commit.
    """
    message = redact(message)  # shown to every client: no credentials from a connection error
    result = await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'failed', failed_at = now(), updated_at = now(), phase = 'failed', "
            "error_message = :message, progress_message = :progress WHERE id = :id AND status = ANY(:active)"
        ),
        {"id": job_id, "message": message, "progress": failed_message(message), "active": list(ACTIVE_STATUSES)},
    )
    if result.rowcount:
        await add_event(conn, job_id, "failed", {"error": message})
    return bool(result.rowcount)


async def get_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping:
    """One primary-key read. Raises JobNotFoundError."""
    row = (
        (await conn.execute(text(f"SELECT {JOB_COLUMNS} FROM indexing_jobs WHERE id = :id"), {"id": job_id}))
        .mappings()
        .first()
    )
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    return row


async def list_jobs(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    repo_path: str | None = None,
    created_after: datetime | None = None,
    limit: int = 50,
) -> list[RowMapping]:
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}; use one of {', '.join(JOB_STATUSES)}")
    rows = await conn.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM indexing_jobs "
            "WHERE (CAST(:status AS text) IS NULL OR status = :status) "
            "AND (CAST(:path AS text) IS NULL OR repo_path = :path) "
            "AND (CAST(:after AS timestamptz) IS NULL OR created_at >= :after) "
            "ORDER BY created_at DESC LIMIT :limit"
        ),
        {"status": status, "path": repo_path, "after": created_after, "limit": limit},
    )
    return list(rows.mappings())


async def job_events(conn: AsyncConnection, job_id: uuid.UUID) -> list[RowMapping]:
    rows = await conn.execute(
        text("SELECT event, detail, at FROM job_events WHERE job_id = :id ORDER BY at, id"), {"id": job_id}
    )
    return list(rows.mappings())


async def purge_finished(conn: AsyncConnection, *, older_than_days: int) -> int:
    """Delete finished jobs (and, by cascade, their ledger and events) older than the retention."""
    result = await conn.execute(
        text(
            "DELETE FROM indexing_jobs WHERE status = ANY(:terminal) "
            "AND updated_at < now() - make_interval(days => :days)"
        ),
        {"terminal": list(TERMINAL_STATUSES), "days": older_than_days},
    )
    return int(result.rowcount or 0)


async def complete_job(conn: AsyncConnection, job_id: uuid.UUID, *, embedder: str, dimension: int) -> bool:
    """Finish a live job whose every batch is recorded; returns False if it was not live (running or blocked).

    Actors call :func:`finish_job`, which says what to do after the commit.

    Records ``embedder`` and ``dimension`` on the repository: every chunk it holds now comes from it.
    """
    row = (
        await conn.execute(
            text(
                "SELECT repository_id, coalesce(files_total, 0) AS files_total, files_indexed, chunks_created, "
                "files_unchanged, files_removed, files_skipped, files_failed, "
                "extract(epoch FROM now() - coalesce(started_at, created_at))::float8 AS seconds "
                "FROM indexing_jobs WHERE id = :id AND status = ANY(:live) FOR UPDATE"
            ),
            {"id": job_id, "live": list(LIVE_STATUSES)},
        )
    ).first()
    if row is None:
        return False
    note = await conn.scalar(
        text(
            "SELECT string_agg(detail->>'message', '; ' ORDER BY at) FROM job_events "
            "WHERE job_id = :id AND event IN ('embedder_changed', 'scan_incomplete')"
        ),
        {"id": job_id},
    )
    message = completion_message(
        files_total=row.files_total,
        files_indexed=row.files_indexed,
        chunks_created=row.chunks_created,
        files_unchanged=row.files_unchanged,
        files_removed=row.files_removed,
        files_skipped=row.files_skipped,
        files_failed=row.files_failed,
        seconds=max(float(row.seconds or 0.0), 0.0),
        note=note,
    )
    await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'completed', completed_at = now(), updated_at = now(), "
            "phase = 'complete', progress_percentage = 100, progress_message = :message WHERE id = :id"
        ),
        {"id": job_id, "message": message},
    )
    await conn.execute(
        text(
            "UPDATE repositories SET last_indexed_at = now(), embedder = :embedder, dimension = :dimension "
            "WHERE id = :id"
        ),
        {"id": row.repository_id, "embedder": embedder, "dimension": dimension},
    )
    await add_event(conn, job_id, "completed", {"message": message})
    return True


async def block_job(conn: AsyncConnection, job_id: uuid.UUID, *, backend: str, error: str) -> float | None:
    """Mark a running job ``blocked`` on ``backend``; returns how long it has been blocked (s).

    Idempotent: a job already blocked keeps its original blocked time, so the timeout counts from
    the first failure. Returns None when the job is neither running nor blocked (finished, cancelled).
    """
    status = await conn.scalar(text("SELECT status FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
    if status not in LIVE_STATUSES:
        return None
    if status == "running":
        await conn.execute(
            text(
                "UPDATE indexing_jobs SET status = 'blocked', updated_at = now(), progress_message = :message "
                "WHERE id = :id"
            ),
            {"id": job_id, "message": waiting_message(backend)},
        )
        await add_event(conn, job_id, "blocked", {"backend": backend, "error": redact(error)})
        return 0.0
    return await blocked_seconds(conn, job_id)


async def blocked_seconds(conn: AsyncConnection, job_id: uuid.UUID) -> float:
    """Seconds since the job's latest ``blocked`` event (0 if it has none)."""
    value = await conn.scalar(
        text("SELECT extract(epoch FROM now() - max(at)) FROM job_events WHERE job_id = :id AND event = 'blocked'"),
        {"id": job_id},
    )
    return float(value or 0.0)


async def unblock_job(conn: AsyncConnection, job_id: uuid.UUID, *, backend: str) -> bool:
    """Return a blocked job to ``running`` (its backend answered); returns False if it was not blocked.

    Lock order: call before touching any of the job's batch rows in the same transaction.
    """
    result = await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'running', updated_at = now(), "
            "progress_message = :message WHERE id = :id AND status = 'blocked'"
        ),
        {"id": job_id, "message": resumed_message(backend)},
    )
    if result.rowcount:
        await add_event(conn, job_id, "resumed", {"backend": backend})
    return bool(result.rowcount)


async def fail_overdue_blocked(conn: AsyncConnection, *, timeout_seconds: float) -> list[uuid.UUID]:
    """Fail jobs blocked longer than the timeout whose batches stopped retrying (messages lost)."""
    rows = await conn.execute(
        text(
            "SELECT j.id, e.detail, extract(epoch FROM now() - e.at) AS seconds FROM indexing_jobs j "
            "CROSS JOIN LATERAL (SELECT detail, at FROM job_events WHERE job_id = j.id AND event = 'blocked' "
            "ORDER BY at DESC LIMIT 1) e WHERE j.status = 'blocked' AND e.at < now() - make_interval(secs => :secs)"
        ),
        {"secs": timeout_seconds},
    )
    failed = []
    for row in list(rows):
        detail = row.detail or {}
        message = blocked_failure(str(detail.get("backend")), float(row.seconds), str(detail.get("error")))
        if await fail_job(conn, row.id, message):
            failed.append(row.id)
    return failed


# --- how a job ends -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completed:
    """Every batch is recorded: the job completes, its chunks come from this embedder."""

    embedder: str
    dimension: int


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`finish_job` did.

    ``ended`` is True only for the call that moved the job to ``status``: that caller, once its
    transaction committed, counts the job and frees its slot (``actors.dispatch.job_ended``).
    False means the job had already ended (another delivery, a cancel): nothing more to do.
    """

    status: JobStatus
    ended: bool


async def finish_job(conn: AsyncConnection, job_id: uuid.UUID, outcome: Completed | Failed) -> Finished:
    """Complete or fail a live (or, for a failure, pending) job; the result says whether this call ended it."""
    if isinstance(outcome, Completed):
        ended = await complete_job(conn, job_id, embedder=outcome.embedder, dimension=outcome.dimension)
        return Finished(JobStatus.COMPLETED, ended)
    return Finished(JobStatus.FAILED, await fail_job(conn, job_id, outcome.reason))


# --- what the pipeline reads and writes on the job row ------------------------------------------


async def find_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping | None:
    """The job's row (:data:`JOB_COLUMNS`), or None; no lock."""
    return (
        (await conn.execute(text(f"SELECT {JOB_COLUMNS} FROM indexing_jobs WHERE id = :id"), {"id": job_id}))
        .mappings()
        .first()
    )


async def job_status(conn: AsyncConnection, job_id: uuid.UUID) -> str | None:
    return await conn.scalar(text("SELECT status FROM indexing_jobs WHERE id = :id"), {"id": job_id})


async def lock_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping | None:
    """Lock the job's row (every writer locks the job before its batches) and return it; None if gone."""
    return (
        (await conn.execute(text(f"SELECT {JOB_COLUMNS} FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job_id}))
        .mappings()
        .first()
    )


async def set_scan_progress(conn: AsyncConnection, job_id: uuid.UUID, message: str, percentage: int) -> bool:
    """Update an unplanned running job's scan progress; False when the job is no longer running."""
    result = await conn.execute(
        text(
            "UPDATE indexing_jobs SET phase = 'scanning', updated_at = now(), progress_message = :message, "
            "progress_percentage = GREATEST(progress_percentage, :pct) "
            "WHERE id = :id AND status = 'running' AND planned_at IS NULL"
        ),
        {"id": job_id, "message": message, "pct": percentage},
    )
    return bool(result.rowcount)


async def mark_planned(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    *,
    files_total: int,
    batches_total: int,
    files_skipped: int,
    files_unchanged: int,
    files_removed: int,
    percentage: int,
    message: str,
    event: dict[str, Any],
) -> None:
    """The plan is written: store its figures and message, and add the ``planned`` event."""
    await conn.execute(
        text(
            "UPDATE indexing_jobs SET planned_at = now(), updated_at = now(), files_total = :total, "
            "batches_total = :batches, files_skipped = :skipped, files_unchanged = :unchanged, "
            "files_removed = :removed, phase = 'chunking', "
            "progress_percentage = GREATEST(progress_percentage, :pct), progress_message = :message "
            "WHERE id = :id"
        ),
        {
            "id": job_id,
            "total": files_total,
            "batches": batches_total,
            "skipped": files_skipped,
            "unchanged": files_unchanged,
            "removed": files_removed,
            "pct": percentage,
            "message": message,
        },
    )
    await add_event(conn, job_id, "planned", event)


def tally(row: RowMapping) -> JobTally:
    """The coordinator's view of a locked job row."""
    return JobTally(
        status=row["status"],
        files_total=int(row["files_total"] or 0),
        batches_total=int(row["batches_total"] or 0),
        batches_done=int(row["batches_done"]),
        files_indexed=int(row["files_indexed"]),
        files_unchanged=int(row["files_unchanged"] or 0),
        chunks_created=int(row["chunks_created"]),
        progress_percentage=int(row["progress_percentage"]),
        files_searchable=int(row["files_searchable"]),
        chunks_embedded=int(row["chunks_embedded"]),
    )


async def add_text_counts(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    *,
    files: int,
    indexed: int,
    skipped: int,
    failed: int,
    chunks: int,
    chunks_embedded: int,
) -> None:
    """Add one batch's text-phase counters to the job (whatever its status: they say what is stored).

    ``files`` is the batch's file count (now searchable), ``chunks_embedded`` its chunks stored with
    a vector from the embedding cache.
    """
    await conn.execute(
        text(
            "UPDATE indexing_jobs SET batches_searchable = batches_searchable + 1, "
            "files_searchable = files_searchable + :files, "
            "files_indexed = files_indexed + :indexed, files_skipped = files_skipped + :skipped, "
            "files_failed = files_failed + :failed, chunks_created = chunks_created + :chunks, "
            "chunks_embedded = chunks_embedded + :embedded, updated_at = now() WHERE id = :id"
        ),
        {
            "id": job_id,
            "files": files,
            "indexed": indexed,
            "skipped": skipped,
            "failed": failed,
            "chunks": chunks,
            "embedded": chunks_embedded,
        },
    )


async def add_vectors(conn: AsyncConnection, job_id: uuid.UUID, chunks: int) -> RowMapping | None:
    """Count ``chunks`` more chunks with a vector (one embedder call's); returns the job's row after it."""
    return (
        (
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET chunks_embedded = chunks_embedded + :n, updated_at = now() "
                    f"WHERE id = :id RETURNING {JOB_COLUMNS}"
                ),
                {"id": job_id, "n": chunks},
            )
        )
        .mappings()
        .first()
    )


async def lock_live(conn: AsyncConnection, job_id: uuid.UUID) -> bool:
    """Lock the job's row for an update in this transaction; True when the job is live.

    The embed stage calls it before storing a call's vectors: a cancel commits either before (no
    vector is stored after it) or after that transaction.
    """
    status = await conn.scalar(
        text("SELECT status FROM indexing_jobs WHERE id = :id FOR NO KEY UPDATE"), {"id": job_id}
    )
    return status in LIVE_STATUSES


async def count_batch_done(conn: AsyncConnection, job_id: uuid.UUID) -> None:
    """One more batch with its vectors recorded: the job completes after its last one."""
    await conn.execute(
        text("UPDATE indexing_jobs SET batches_done = batches_done + 1, updated_at = now() WHERE id = :id"),
        {"id": job_id},
    )


async def record_progress(conn: AsyncConnection, job_id: uuid.UUID, progress: BatchProgress) -> None:
    """Store the job's progress (never backwards) and its 10 % step event, if any."""
    await conn.execute(
        text(
            # A blocked job keeps saying what it waits for.
            "UPDATE indexing_jobs SET phase = :phase, progress_message = CASE WHEN status = 'blocked' "
            "THEN progress_message ELSE :message END, "
            "progress_percentage = GREATEST(progress_percentage, :pct) WHERE id = :id"
        ),
        {"id": job_id, "phase": progress.phase, "message": progress.message, "pct": progress.percentage},
    )
    if progress.event is not None:
        await add_event(conn, job_id, "progress", progress.event)


async def record_current_progress(conn: AsyncConnection, job_id: uuid.UUID, *, before: int) -> None:
    """Store the job's progress as its row says now (counters already added in this transaction).

    ``before`` is the percentage the caller read first, for the 10 % step event.
    """
    current = await find_job(conn, job_id)
    if current is None or current["status"] not in LIVE_STATUSES:
        return
    rows = await conn.execute(
        text("SELECT state, count(*) AS n FROM index_batches WHERE job_id = :job_id GROUP BY state"),
        {"job_id": job_id},
    )
    counts = {row.state: int(row.n) for row in rows}
    await record_progress(conn, job_id, progress_of(tally(current), counts=counts, before=before))


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of a repository with a live job search reaches by words and by meaning."""

    repository_id: uuid.UUID
    name: str
    searchable_percentage: int
    semantic_percentage: int


async def live_coverage(conn: AsyncConnection, repository_ids: list[uuid.UUID] | None) -> list[Coverage]:
    """Coverage of the repositories (all when ``repository_ids`` is None) that have a live, planned job.

    Read from the job rows alone (no count over chunks): the files the job leaves unchanged count as
    searched both ways, its own files in the shares its counters say.
    """
    rows = await conn.execute(
        text(
            "SELECT j.repository_id, r.name, j.files_total, j.files_unchanged, j.files_searchable, "
            "j.chunks_created, j.chunks_embedded FROM indexing_jobs j JOIN repositories r ON r.id = j.repository_id "
            "WHERE j.status = ANY(:live) AND j.planned_at IS NOT NULL "
            "AND (CAST(:ids AS uuid[]) IS NULL OR j.repository_id = ANY(:ids)) ORDER BY r.name"
        ),
        {"live": list(LIVE_STATUSES), "ids": repository_ids},
    )
    out = []
    for row in rows:
        total = int(row.files_total or 0)
        kept = int(row.files_unchanged or 0)
        text_share = searchable_fraction(files_total=total, files_searchable=int(row.files_searchable))
        semantic_share = semantic_fraction(
            files_total=total,
            files_searchable=int(row.files_searchable),
            chunks_created=int(row.chunks_created),
            chunks_embedded=int(row.chunks_embedded),
        )
        everything = max(total + kept, 1)
        out.append(
            Coverage(
                row.repository_id,
                row.name,
                int(100 * (kept + total * text_share) / everything),
                int(100 * (kept + total * semantic_share) / everything),
            )
        )
    return out


# --- recovery (the server's resume and upkeep) ---------------------------------------------------


async def live_jobs(conn: AsyncConnection) -> list[tuple[uuid.UUID, bool]]:
    """``(id, planned)`` of every live job, oldest start first."""
    rows = await conn.execute(
        text("SELECT id, planned_at FROM indexing_jobs WHERE status = ANY(:live) ORDER BY started_at"),
        {"live": list(LIVE_STATUSES)},
    )
    return [(row.id, row.planned_at is not None) for row in rows]


async def stale_unplanned(conn: AsyncConnection, *, older_than_seconds: float) -> list[uuid.UUID]:
    """Running jobs still unplanned after ``older_than_seconds``: their plan message was lost."""
    rows = await conn.execute(
        text(
            "SELECT id FROM indexing_jobs WHERE status = 'running' AND planned_at IS NULL "
            "AND updated_at < now() - make_interval(secs => :secs)"
        ),
        {"secs": older_than_seconds},
    )
    return [row.id for row in rows]


async def activity(conn: AsyncConnection) -> tuple[int, float | None]:
    """Active jobs, and the seconds since the oldest running job started (None when none runs)."""
    row = (
        await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = ANY(:active)) AS active, "
                "extract(epoch FROM now() - min(started_at) FILTER (WHERE status = 'running')) AS oldest "
                "FROM indexing_jobs"
            ),
            {"active": list(ACTIVE_STATUSES)},
        )
    ).one()
    return int(row.active), float(row.oldest) if row.oldest is not None else None
