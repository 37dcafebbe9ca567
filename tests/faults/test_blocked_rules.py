"""The blocked-state rules on a real database (part of the default suite: fast, no processes).

Blocking is idempotent and keeps the first blocked time; unblocking emits ``resumed``; terminal
jobs never change; the upkeep's backstop fails only jobs blocked past the timeout, naming the
backend; a blocked job holds its running slot and can be cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import jobs
from models.database import create_engine
from models.migrate import upgrade_to_head
from tests.faults.conftest import Postgres

BACKEND = "ollama:test-model"


@pytest.fixture(scope="module")
async def engine(faults_pg: Postgres) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(faults_pg.url, 384)
    created = create_engine(faults_pg.url, pool_size=2)
    yield created
    await created.dispose()


async def admitted(engine: AsyncEngine, limit: int = 100) -> uuid.UUID:
    async with engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=limit)
        admission = await jobs.admit_job(conn, repo_path=f"/tmp/blocked-rules-{uuid.uuid4()}", name="rules")
    assert admission.status == "running"
    return admission.job_id


async def status_and_events(engine: AsyncEngine, job_id: uuid.UUID) -> tuple[str, str, list[str]]:
    async with engine.connect() as conn:
        row = await jobs.get_job(conn, job_id)
        events = [event["event"] for event in await jobs.job_events(conn, job_id)]
    return row["status"], row["progress_message"], events


async def test_block_is_idempotent_and_unblock_resumes(engine: AsyncEngine) -> None:
    job_id = await admitted(engine)
    async with engine.begin() as conn:
        assert await jobs.block_job(conn, job_id, backend=BACKEND, error="HTTP 503") == 0.0
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE job_events SET at = at - interval '40 seconds' WHERE job_id = :id AND event = 'blocked'"),
            {"id": job_id},
        )
        waited = await jobs.block_job(conn, job_id, backend=BACKEND, error="HTTP 503 again")
    assert waited is not None and 39 <= waited < 60  # the first blocked time counts, not the latest failure
    status, message, events = await status_and_events(engine, job_id)
    assert status == "blocked" and message == f"waiting for the embedding service ({BACKEND})"
    assert events.count("blocked") == 1
    async with engine.begin() as conn:
        assert await jobs.unblock_job(conn, job_id, backend=BACKEND)
        assert not await jobs.unblock_job(conn, job_id, backend=BACKEND)
    status, message, events = await status_and_events(engine, job_id)
    assert status == "running" and BACKEND in message and events[-1] == "resumed"


async def test_terminal_jobs_never_change(engine: AsyncEngine) -> None:
    job_id = await admitted(engine)
    async with engine.begin() as conn:
        await jobs.cancel_job(conn, job_id)
    async with engine.begin() as conn:
        assert await jobs.block_job(conn, job_id, backend=BACKEND, error="down") is None
        assert not await jobs.unblock_job(conn, job_id, backend=BACKEND)
        assert not await jobs.fail_job(conn, job_id, "late failure")
        assert not await jobs.complete_job(conn, job_id, embedder=BACKEND, dimension=384)
    status, _, events = await status_and_events(engine, job_id)
    assert status == "cancelled" and "blocked" not in events


async def test_blocked_job_holds_its_slot_and_can_be_cancelled(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        active = int(
            await conn.scalar(text("SELECT count(*) FROM indexing_jobs WHERE status IN ('running', 'blocked')"))
        )
    job_id = await admitted(engine, limit=active + 1)
    async with engine.begin() as conn:
        await jobs.block_job(conn, job_id, backend=BACKEND, error="down")
    async with engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=active + 1)
        waiting = await jobs.admit_job(conn, repo_path=f"/tmp/blocked-rules-{uuid.uuid4()}", name="waits")
    assert waiting.status == "pending"
    async with engine.begin() as conn:
        cancelled = await jobs.cancel_job(conn, job_id)
        jobs.bind_limits(conn, max_concurrent_jobs=active + 1)
        cancelled_pending = await jobs.cancel_job(conn, waiting.job_id)
    assert cancelled["status"] == "cancelled" and cancelled_pending["status"] == "cancelled"
    _, _, events = await status_and_events(engine, job_id)
    assert events[-1] == "cancelled"


async def test_upkeep_fails_only_jobs_blocked_past_the_timeout(engine: AsyncEngine) -> None:
    recent, overdue = await admitted(engine), await admitted(engine)
    async with engine.begin() as conn:
        await jobs.block_job(conn, recent, backend=BACKEND, error="HTTP 503")
        await jobs.block_job(conn, overdue, backend=BACKEND, error="connection refused")
        await conn.execute(
            text("UPDATE job_events SET at = at - interval '700 seconds' WHERE job_id = :id AND event = 'blocked'"),
            {"id": overdue},
        )
        failed = await jobs.fail_overdue_blocked(conn, timeout_seconds=600)
    assert failed == [overdue]
    async with engine.connect() as conn:
        row = await jobs.get_job(conn, overdue)
        assert (await jobs.get_job(conn, recent))["status"] == "blocked"
    assert row["status"] == "failed"
    assert row["error_message"].startswith(f"the embedding service ({BACKEND}) stayed unreachable for 70")
    assert "connection refused" in row["error_message"]
