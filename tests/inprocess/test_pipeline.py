"""A job through every real actor in one process (StubBroker + Worker), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import text

from actors import metrics
from actors.dispatch import job_ended
from actors.messages import COORDINATE_QUEUE, WRITE_QUEUE, BatchPayload, plan_message, write_message
from models import jobs
from models.lifecycle import TERMINAL_STATUSES
from server.errors import InvalidStateError
from server.schemas import JobStatus
from server.service import IndexingService


def make_repo(root: Path, name: str, files: int) -> Path:
    repo = root / name
    for number in range(files):
        module = repo / "pkg" / f"module_{number}.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(
            f'def function_{number}(value):\n    """Return value plus {number}."""\n    return value + {number}\n',
            encoding="utf-8",
        )
    return repo


async def wait_terminal(service: IndexingService, job_id: str, timeout: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await service.status(job_id)
        if status.status in TERMINAL_STATUSES:
            return status
        assert time.monotonic() < deadline, f"job still {status.status}: {status.progress_message}"
        await asyncio.sleep(0.05)


def finished_count(status: str) -> float:
    return metrics.REGISTRY.get_sample_value("codebase_mcp_jobs_finished_total", {"status": status}) or 0.0


async def test_a_job_runs_through_every_actor(
    service: IndexingService, repos_root: Path, stub_broker: StubBroker
) -> None:
    repo = make_repo(repos_root, "seven", 7)
    completed_before = finished_count("completed")
    started = await service.start_indexing(str(repo))
    final = await wait_terminal(service, started.job_id)
    # The job is counted after the commit that completed it: wait for the recording actor to return.
    await asyncio.to_thread(stub_broker.join, COORDINATE_QUEUE)
    assert final.status == "completed", final.progress_message
    assert final.files_total == final.files_indexed == 7
    assert final.batches_total == final.batches_done == 3  # batch_size 3: 3 + 3 + 1
    assert final.progress_percentage == 100
    assert final.progress_message.startswith("complete: 7 files indexed")
    assert finished_count("completed") == completed_before + 1
    async with service.engine.connect() as conn:
        states = (
            await conn.execute(
                text("SELECT state, count(*) FROM index_batches WHERE job_id = :id GROUP BY state"),
                {"id": uuid.UUID(started.job_id)},
            )
        ).all()
        chunks = await conn.scalar(
            text(
                "SELECT count(*) FROM chunks c JOIN files f ON f.id = c.file_id "
                "JOIN repositories r ON r.id = f.repository_id WHERE r.path = :p"
            ),
            {"p": str(repo)},
        )
    assert states == [("recorded", 3)]
    assert chunks == final.chunks_created > 0


async def test_an_unchanged_reindex_reads_nothing_again(service: IndexingService, repos_root: Path) -> None:
    repo = make_repo(repos_root, "again", 4)
    first = await wait_terminal(service, (await service.start_indexing(str(repo))).job_id)
    assert first.status == "completed"
    second = await wait_terminal(service, (await service.start_indexing(str(repo))).job_id)
    assert second.status == "completed"
    assert second.files_total == 0 and second.files_unchanged == 4
    assert second.progress_message.startswith("up to date: 4 files unchanged")


async def test_a_vanished_repository_fails_and_is_counted_once(
    service: IndexingService, repos_root: Path, stub_broker: StubBroker
) -> None:
    repo = make_repo(repos_root, "vanishing", 1)
    failed_before = finished_count("failed")
    async with service.engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=service.settings.max_concurrent_jobs)
        admission = await jobs.admit_job(conn, repo_path=str(repo), name="vanishing")
    for module in repo.rglob("*.py"):
        module.unlink()
    for folder in sorted(repo.rglob("*"), reverse=True):
        folder.rmdir()
    repo.rmdir()
    # Two deliveries of the plan message: the job fails once and is counted once.
    stub_broker.enqueue(plan_message(admission.job_id))
    stub_broker.enqueue(plan_message(admission.job_id))
    final = await wait_terminal(service, str(admission.job_id))
    assert final.status == "failed"
    assert final.error_message == f"repository path {repo} no longer exists"
    await asyncio.to_thread(stub_broker.join, "index.plan")
    assert finished_count("failed") == failed_before + 1


async def test_finish_job_ends_a_job_once(service: IndexingService, repos_root: Path) -> None:
    repo = make_repo(repos_root, "twice", 1)
    async with service.engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=service.settings.max_concurrent_jobs)
        admission = await jobs.admit_job(conn, repo_path=str(repo), name="twice")
    async with service.engine.begin() as conn:
        first = await jobs.finish_job(conn, admission.job_id, jobs.Failed("first reason"))
    async with service.engine.begin() as conn:
        second = await jobs.finish_job(conn, admission.job_id, jobs.Failed("second reason"))
        late = await jobs.finish_job(conn, admission.job_id, jobs.Completed("fake", 384))
    assert (first.ended, second.ended, late.ended) == (True, False, False)
    failed_before = finished_count("failed")
    assert await job_ended(service.engine, 3, first)
    assert not await job_ended(service.engine, 3, second)
    assert finished_count("failed") == failed_before + 1
    status = await service.status(str(admission.job_id))
    assert status.error_message == "first reason"


async def test_a_payload_of_an_unknown_version_is_dropped_and_logged(
    service: IndexingService, stub_broker: StubBroker, caplog: pytest.LogCaptureFixture
) -> None:
    message = write_message(uuid.uuid4(), 0, uuid.uuid4(), BatchPayload(()))
    message.args[3]["version"] = 99  # what a newer worker would send
    with caplog.at_level(logging.WARNING, logger="actors.pipeline"):
        stub_broker.enqueue(message)
        await asyncio.to_thread(stub_broker.join, WRITE_QUEUE)
        await asyncio.sleep(0)
    assert any("payload version 99" in record.getMessage() for record in caplog.records)


async def test_cancel_gives_up_on_a_row_a_frozen_worker_holds(service: IndexingService, repos_root: Path) -> None:
    """A worker stopped (SIGSTOP, a debugger) mid-transaction holds the job's row lock: cancel says
    so after the lock timeout instead of blocking the tool call without limit, and changes nothing."""
    repo = make_repo(repos_root, "frozen", 1)
    async with service.engine.begin() as conn:
        jobs.bind_limits(conn, max_concurrent_jobs=service.settings.max_concurrent_jobs)
        admission = await jobs.admit_job(conn, repo_path=str(repo), name="frozen")
    async with service.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(text("SELECT 1 FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": admission.job_id})
        with pytest.raises(InvalidStateError, match="locked by a worker"):
            # A guard against hanging the suite, not a timing assertion: the cancel must raise by itself.
            await asyncio.wait_for(service.cancel(str(admission.job_id)), timeout=60)
        await transaction.rollback()
    assert (await service.status(str(admission.job_id))).status == admission.status
    assert (await service.cancel(str(admission.job_id))).status == "cancelled"
