"""Job rules, in the database: admission, the running-slot limit, cancel, status, listing, events.

Every function takes an open ``AsyncConnection`` inside a transaction the caller owns, so that a
state change and the broker message that goes with it can be committed together.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from models.logs import redact
from models.tables import ACTIVE_STATUSES, JOB_STATUSES, TERMINAL_STATUSES

#: Statuses whose pipeline is live: batches move on. A ``blocked`` job keeps its messages alive and
#: waits for a backend; it holds its running slot and returns to ``running`` by itself.
LIVE_STATUSES = ("running", "blocked")

#: Serialises admission and promotion so that the running-slot limit is never exceeded.
_ADMISSION_LOCK_KEY = 0x0C0DE10B5

JOB_COLUMNS = (
    "id, repository_id, repo_path, name, status, phase, progress_percentage, progress_message, files_total, "
    "files_indexed, files_skipped, files_failed, files_unchanged, files_removed, chunks_created, batches_total, "
    "batches_done, error_message, "
    "created_at, started_at, planned_at, completed_at, cancelled_at, failed_at, updated_at"
)


class JobNotFoundError(LookupError):
    """No job has that id."""


class JobStateError(RuntimeError):
    """The job's status does not allow the requested change (for example cancelling a completed job)."""


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
    running = await _active_running_count(conn)
    free = await _running_limit(conn) > running
    job_id = uuid.uuid4()
    status = "running" if free else "pending"
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
            "status": status,
            "phase": "scanning" if free else "queued",
            "message": "scanning: waiting for a worker" if free else "queued: waiting for a free job slot",
        },
    )
    await add_event(conn, job_id, "created", {"repo_path": repo_path, "name": name})
    if free:
        await add_event(conn, job_id, "started")
    return Admission(job_id, status, existing=False)


async def _active_running_count(conn: AsyncConnection) -> int:
    return int(
        await conn.scalar(text("SELECT count(*) FROM indexing_jobs WHERE status IN ('running', 'blocked')")) or 0
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
    free = await _running_limit(conn) - await _active_running_count(conn)
    if free <= 0:
        return []
    rows = await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'running', started_at = now(), updated_at = now(), phase = 'scanning', "
            "progress_message = 'scanning: waiting for a worker' "
            "WHERE id IN (SELECT id FROM indexing_jobs WHERE status = 'pending' ORDER BY created_at LIMIT :free "
            "FOR UPDATE SKIP LOCKED) RETURNING id"
        ),
        {"free": free},
    )
    started = [row.id for row in rows]
    for job_id in started:
        await add_event(conn, job_id, "started")
    return started


async def cancel_job(conn: AsyncConnection, job_id: uuid.UUID) -> RowMapping:
    """Mark the job cancelled at once; workers notice within seconds and stop.

    Raises:
        JobNotFoundError, JobStateError: unknown job, or a job already finished.
    """
    row = (
        await conn.execute(text("SELECT status FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
    ).first()
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    if row.status in TERMINAL_STATUSES:
        raise JobStateError(f"cannot cancel job {job_id}: it is already {row.status}")
    result = (
        (
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET status = 'cancelled', cancelled_at = now(), updated_at = now(), "
                    "progress_message = 'cancelled at ' || progress_percentage || '%: ' || files_indexed "
                    "|| ' files indexed, ' || chunks_created || ' chunks kept' "
                    f"WHERE id = :id RETURNING {JOB_COLUMNS}"
                ),
                {"id": job_id},
            )
        )
        .mappings()
        .one()
    )
    await add_event(conn, job_id, "cancelled", {"previous_status": row.status})
    return result


async def fail_job(conn: AsyncConnection, job_id: uuid.UUID, message: str) -> bool:
    """Fail an active job with ``message``; returns False if it had already finished."""
    message = redact(message)  # shown to every client: no credentials from a connection error
    result = await conn.execute(
        text(
            "UPDATE indexing_jobs SET status = 'failed', failed_at = now(), updated_at = now(), phase = 'failed', "
            "error_message = :message, progress_message = 'failed: ' || :message "
            "WHERE id = :id AND status = ANY(:active)"
        ),
        {"id": job_id, "message": message, "active": list(ACTIVE_STATUSES)},
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


def completion_message(
    *,
    files_total: int,
    files_indexed: int,
    chunks_created: int,
    files_unchanged: int,
    files_removed: int,
    files_skipped: int,
    files_failed: int,
    seconds: float,
    note: str | None = None,
) -> str:
    """The final progress message: ``up to date: ...`` when the job had nothing to (re)index.

    ``note`` (why the job re-indexed everything, for instance) is appended in parentheses.
    """
    suffix = f" ({note})" if note else ""
    if files_total == 0 and files_failed == 0 and (files_unchanged or files_removed):
        parts = [f"{files_unchanged:,} files unchanged"]
        parts += [f"{files_removed:,} removed"] if files_removed else []
        parts += [f"{files_skipped:,} skipped"] if files_skipped else []
        return f"up to date: {', '.join(parts)} (checked in {seconds:.1f} s){suffix}"
    parts = [f"{files_indexed:,} files indexed", f"{chunks_created:,} chunks"]
    parts += [f"{files_unchanged:,} unchanged"] if files_unchanged else []
    parts += [f"{files_removed:,} removed"] if files_removed else []
    parts += [f"{files_skipped:,} skipped", f"{files_failed:,} failed"]
    return f"complete: {', '.join(parts)} in {seconds:.1f} s{suffix}"


async def complete_job(conn: AsyncConnection, job_id: uuid.UUID, *, embedder: str, dimension: int) -> bool:
    """Finish a live job whose every batch is recorded; returns False if it was not live (running or blocked).

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


def waiting_message(backend: str) -> str:
    return f"waiting for the embedding service ({backend})"


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
            "progress_message = 'embedding: the embedding service (' || :backend || ') answers again' "
            "WHERE id = :id AND status = 'blocked'"
        ),
        {"id": job_id, "backend": backend},
    )
    if result.rowcount:
        await add_event(conn, job_id, "resumed", {"backend": backend})
    return bool(result.rowcount)


def blocked_failure(backend: str, seconds: float, error: str) -> str:
    return f"the embedding service ({backend}) stayed unreachable for {seconds:.0f} s: {error}"


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
