"""Publishing inside ledger transactions: what every producer (server, planner, coordinator) calls."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import dramatiq
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from actors import metrics
from actors.messages import chunk_message, embed_message, plan_message, record_message
from models import jobs, ledger


async def publish(message: dramatiq.Message[Any], *, delay_ms: int | None = None) -> None:
    """Send with publisher confirms, off the event loop (pika is blocking); ``delay_ms`` holds it back."""
    await asyncio.to_thread(functools.partial(dramatiq.get_broker().enqueue, message, delay=delay_ms))


async def dispatch_window(conn: AsyncConnection, job_id: uuid.UUID, window: int) -> int:
    """Fill the job's in-flight window with pending batches; returns how many were sent.

    The batch rows must already be committed: a consumer waits on a row lock, but cannot see a row
    whose insert is still uncommitted and would drop the message.
    """
    batch_nos = await ledger.batches_to_dispatch(conn, job_id, window)
    for batch_no in batch_nos:
        token = uuid.uuid4()
        await publish(chunk_message(job_id, batch_no, token))
        await ledger.mark_dispatched(conn, job_id, batch_no, token)
    return len(batch_nos)


async def start_planning(job_ids: list[uuid.UUID]) -> None:
    for job_id in job_ids:
        await publish(plan_message(job_id))


async def promote_and_plan(engine: AsyncEngine, max_concurrent_jobs: int) -> list[uuid.UUID]:
    """Start pending jobs into free slots (own transaction), then publish their plan messages.

    Plan messages go out only after the commit: the planner must find the job already running.
    A crash in between leaves a running, unplanned job, which the server's resume and upkeep plan.
    """
    async with engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=max_concurrent_jobs)
        started = await jobs.promote_pending(conn)
    await start_planning(started)
    return started


async def job_ended(engine: AsyncEngine, max_concurrent_jobs: int, finished: jobs.Finished) -> bool:
    """After the commit of :func:`models.jobs.finish_job`: count the job and free its slot, only if
    that call ended it. Returns ``finished.ended``."""
    if finished.ended:
        metrics.job_finished(finished.status.value)
        await promote_and_plan(engine, max_concurrent_jobs)
    return finished.ended


async def redispatch_stale(conn: AsyncConnection, *, older_than_seconds: float) -> list[tuple[uuid.UUID, int, str]]:
    """Re-send batches whose messages were lost (broker data loss, purged queue): none is ever stranded.

    A written or embedded batch only needs its record message again, a searchable one its embed
    message (the embed stage reads the stored chunks); a queued or chunked one restarts from
    chunking (its payload travelled in the lost message). The fresh token retires any old message
    still alive.
    """
    stale = await ledger.stale_batches(conn, older_than_seconds=older_than_seconds)
    for job_id, batch_no, state in stale:
        token = uuid.uuid4()
        if state in ("written", "embedded"):
            await publish(record_message(job_id, batch_no, token))
            await ledger.replace_token(conn, job_id, batch_no, token)
        elif state == "searchable":
            await publish(embed_message(job_id, batch_no, token))
            await ledger.replace_token(conn, job_id, batch_no, token)
        else:
            await publish(chunk_message(job_id, batch_no, token))
            await ledger.mark_dispatched(conn, job_id, batch_no, token)
    return stale  # (job, batch, state) re-sent: models/stalls.py notes them in the job's status
