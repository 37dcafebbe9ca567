"""A job whose batches stopped moving says so (issue 16: lost messages stranded a job silently).

Messages can be lost from RabbitMQ (a vhost deleted and recreated, a purged queue, a node that
lost its disk) or held by a stopped worker. The server's upkeep re-sends a batch once it has not
moved for ``STALE_BATCH_SECONDS`` (:func:`actors.dispatch.redispatch_stale`); until then the
status used to look like a job at work. Here the upkeep:

- notes a running job none of whose batches has moved for ``STALL_NOTICE_SECONDS``: a ``stalled``
  job event (once per stall) and a line in ``progress_message`` saying when its batches are re-sent;
- notes each re-send: a ``redispatched`` event naming the batches and a line in ``progress_message``.

The coordinator's next recorded batch writes ``progress_message`` again, so the notes last only
while the job is stuck. Blocked jobs keep their own message (they wait for the embedder).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models.jobs import add_event
from models.lifecycle import IN_FLIGHT_STAGE


@dataclass(frozen=True, slots=True)
class Stall:
    job_id: uuid.UUID
    quiet_seconds: float  # since any batch of the job last moved


async def new_stalls(conn: AsyncConnection, *, quiet_seconds: float) -> list[Stall]:
    """Running, planned jobs with batches in flight, none of which moved for ``quiet_seconds``, not
    noted since their last movement."""
    rows = await conn.execute(
        text(
            "SELECT j.id, extract(epoch FROM now() - max(b.updated_at)) AS quiet "
            "FROM indexing_jobs j JOIN index_batches b ON b.job_id = j.id "
            "WHERE j.status = 'running' AND j.planned_at IS NOT NULL GROUP BY j.id "
            "HAVING bool_or(b.state = ANY(:in_flight)) "
            "AND max(b.updated_at) < now() - make_interval(secs => :secs) "
            "AND max(b.updated_at) > coalesce((SELECT max(e.at) FROM job_events e "
            "WHERE e.job_id = j.id AND e.event = 'stalled'), '-infinity'::timestamptz)"
        ),
        {"in_flight": list(IN_FLIGHT_STAGE), "secs": quiet_seconds},
    )
    return [Stall(row.id, float(row.quiet)) for row in rows]


def stall_note(quiet_seconds: float, stale_batch_seconds: float, now: datetime) -> str:
    resend_at = now + timedelta(seconds=max(stale_batch_seconds - quiet_seconds, 0))
    return (
        f"no batch has moved for {quiet_seconds:.0f} s (every worker busy or stopped, or messages lost from "
        f"RabbitMQ); batches idle for {stale_batch_seconds:.0f} s are re-sent, from about "
        f"{resend_at:%H:%M:%S} UTC"
    )


def redispatch_note(batches: int, stale_batch_seconds: float) -> str:
    return (
        f"re-sent {batches} batch(es) that had not moved for {stale_batch_seconds:.0f} s (their messages were "
        "lost from RabbitMQ or held by a stopped worker)"
    )


async def _note(conn: AsyncConnection, job_id: uuid.UUID, note: str) -> None:
    await conn.execute(
        text("UPDATE indexing_jobs SET progress_message = :note WHERE id = :id AND status = 'running'"),
        {"id": job_id, "note": note},
    )


async def note_stalls(conn: AsyncConnection, *, quiet_seconds: float, stale_batch_seconds: float) -> list[Stall]:
    """Mark the jobs that stopped moving (event and progress note); returns them."""
    stalls = await new_stalls(conn, quiet_seconds=quiet_seconds)
    now = datetime.now(UTC)
    for stall in stalls:
        resend_in = max(stale_batch_seconds - stall.quiet_seconds, 0.0)
        detail = {"quiet_seconds": round(stall.quiet_seconds, 1), "resend_in_seconds": round(resend_in, 1)}
        await add_event(conn, stall.job_id, "stalled", detail)
        await _note(conn, stall.job_id, stall_note(stall.quiet_seconds, stale_batch_seconds, now))
    return stalls


async def note_redispatched(
    conn: AsyncConnection, resent: Sequence[tuple[uuid.UUID, int, str]], *, stale_batch_seconds: float
) -> None:
    """For each job with re-sent batches: a ``redispatched`` event and a progress note."""
    by_job: dict[uuid.UUID, list[tuple[int, str]]] = defaultdict(list)
    for job_id, batch_no, state in resent:
        by_job[job_id].append((batch_no, state))
    for job_id, batches in by_job.items():
        detail = {
            "batches": [batch_no for batch_no, _ in sorted(batches)],
            "states": sorted({state for _, state in batches}),
            "idle_seconds": stale_batch_seconds,
        }
        await add_event(conn, job_id, "redispatched", detail)
        await _note(conn, job_id, redispatch_note(len(batches), stale_batch_seconds))
