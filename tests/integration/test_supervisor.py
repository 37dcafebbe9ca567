"""The worker pool of ``codebase-mcp serve`` (server/supervisor.py) on real processes.

Stdio servers as an assistant starts them (one per editor window), no worker started by hand:
the first server takes the lease and starts one pool, the second sees it attached; the owner is
SIGKILLed mid-job and the survivor takes over, the job completes with nothing done twice; closing
the last client's stdin stops the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from models.settings import Settings
from server.supervisor import Lease, WorkerPool, attached_workers
from tests.faults.test_crash_matrix import verify_completed
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, REPO_ROOT, McpClient, free_port, wait_for
from tests.integration.test_background_indexing import control

WORKER_PROCESSES = 1


@pytest.fixture(scope="module")
def pool_env(base_env: dict[str, str], make_vhost: Any) -> Iterator[dict[str, str]]:
    """The servers' environment: their own vhost (no other test's workers attached) and data dir."""
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-pool-"))
    env = {
        **base_env,
        "CODEBASE_MCP_BROKER_URL": make_vhost(),
        "CODEBASE_MCP_DATA_DIR": str(data_dir),
        "CODEBASE_MCP_WORKERS": "auto",
        "CODEBASE_MCP_WORKER_PROCESSES": str(WORKER_PROCESSES),
        "CODEBASE_MCP_WORKER_THREADS": "2",
        # Small batches: a job is many messages, so a pool can die in the middle of one.
        "CODEBASE_MCP_BATCH_SIZE": "20",
        # The pool's Prometheus exporter on a port of its own (9191 is shared by the machine).
        "dramatiq_prom_port": str(free_port()),
        "PYTHONPATH": str(REPO_ROOT),
    }
    yield env


def pool_settings(env: dict[str, str]) -> Settings:
    """The settings the servers read from ``env`` (to find their lease file and broker)."""
    values = {key.removeprefix("CODEBASE_MCP_").lower(): value for key, value in env.items()}
    return Settings.model_validate({key: value for key, value in values.items() if key in Settings.model_fields})


def start_idle_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A stdio server whose client sends nothing yet (an editor window open on another project)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "codebase-mcp"), "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


@asynccontextmanager
async def stdio_session(env: dict[str, str], log: Path) -> AsyncIterator[McpClient]:
    async with AsyncExitStack() as stack:
        errlog = stack.enter_context(log.open("a"))
        params = StdioServerParameters(command=str(BIN / "codebase-mcp"), args=["serve"], env=env, cwd=REPO_ROOT)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield McpClient(session)


async def consumers(settings: Settings) -> int | None:
    return await asyncio.to_thread(attached_workers, settings.broker_url)


async def lease_owner(settings: Settings) -> int | None:
    return WorkerPool(settings).lease.owner_pid()


def lease_is_free(settings: Settings) -> bool:
    probe = Lease(WorkerPool(settings).lease.path)
    free = probe.try_acquire()
    probe.release()
    return free


def test_lease_is_exclusive_and_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "workers.lock"
    first, second = Lease(path), Lease(path)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    # A holder SIGKILLed while holding it: the kernel releases the lock, nobody has to clean up.
    holder = subprocess.Popen(
        [
            str(BIN / "python"),
            "-c",
            "import sys, time; from pathlib import Path; from server.supervisor import Lease; "
            "lease = Lease(Path(sys.argv[1])); assert lease.try_acquire(); print('held', flush=True); time.sleep(600)",
            str(path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert not first.try_acquire()
        assert Lease(path).owner_pid() == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert first.try_acquire()
    first.release()


async def job_row(db: asyncpg.Pool, job_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    assert row is not None
    return dict(row)


async def test_servers_share_one_pool_and_the_survivor_takes_over(
    pool_env: dict[str, str], db: asyncpg.Pool, fake_embedding_url: str, tmp_path: Path
) -> None:
    settings = pool_settings(pool_env)
    repo = tmp_path / "repo"
    generate_repo(repo, 240, 60, seed=1101)
    first = start_idle_server(pool_env, tmp_path / "server-a.log")
    # An embedder cost per text, so that the job is still running when its pool's owner dies.
    control(fake_embedding_url, {"delay_ms_per_text": 15})
    try:
        await wait_for(lambda: lease_owner(settings), timeout=60, what="a server to take the lease")
        assert await lease_owner(settings) == first.pid
        await wait_for(
            lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=90, what="the first server's pool"
        )
        async with stdio_session(pool_env, tmp_path / "server-b.log") as client:
            # Two servers alive: still one pool, owned by the first.
            for _ in range(3):
                await asyncio.sleep(1.5)
                assert await consumers(settings) == WORKER_PROCESSES
                assert await lease_owner(settings) == first.pid
            started = await client.call("start_indexing_background", repo_path=str(repo), name="takeover")
            job_id = str(started["job_id"])

            async def some_batch_done() -> bool:
                row = await job_row(db, job_id)
                return bool(row["batches_done"] > 0 or row["status"] != "running")

            await wait_for(some_batch_done, timeout=120, what="the first batch")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            at_kill = await job_row(db, job_id)
            assert at_kill["status"] == "running" and at_kill["batches_done"] < at_kill["batches_total"], at_kill

            async def survivor_owns() -> bool:
                return await lease_owner(settings) not in (None, first.pid)

            await wait_for(survivor_owns, timeout=30, what="the second server to take the lease")
            await wait_for(
                lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=60, what="the survivor's pool"
            )
            at_takeover = await job_row(db, job_id)
            print(
                f"owner SIGKILLed at {at_kill['batches_done']}/{at_kill['batches_total']} batches; "
                f"the survivor's pool attached at {at_takeover['batches_done']}"
            )
            # The rest of the job was left to the survivor's pool (the killed pool's workers stopped).
            assert at_takeover["batches_done"] < at_takeover["batches_total"], at_takeover

            async def completed() -> str | None:
                status = await client.call("get_indexing_status", job_id=job_id)
                return str(status["status"]) if status["status"] in ("completed", "failed", "cancelled") else None

            assert await wait_for(completed, timeout=240, interval=0.5, what="the job") == "completed"
            # asyncpg.Pool has every method of the crash matrix's Db.
            await verify_completed(db, job_id, repo)  # type: ignore[arg-type]
            events = await db.fetch("SELECT event FROM job_events WHERE job_id = $1", uuid.UUID(job_id))
            assert [row["event"] for row in events].count("completed") == 1
            # The killed owner's workers died with it: one pool is left, the survivor's.
            await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=60, what="exactly one pool")
        # The client closed the survivor's stdin: its workers stop and the lease is free.
        await wait_for(lambda: _equals(consumers(settings), 0), timeout=60, what="the workers to stop")
        assert lease_is_free(settings)
    finally:
        control(fake_embedding_url, {"delay_ms_per_text": 0})
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)


async def test_closing_stdin_stops_the_server_and_its_workers(pool_env: dict[str, str], tmp_path: Path) -> None:
    settings = pool_settings(pool_env)
    server = start_idle_server(pool_env, tmp_path / "server.log")
    try:
        await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=90, what="the server's pool")
        assert server.stdin is not None
        server.stdin.close()  # what an editor does when it closes the window
        code = await asyncio.to_thread(server.wait, 60)
        assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
        await wait_for(lambda: _equals(consumers(settings), 0), timeout=30, what="the workers to stop")
        assert lease_is_free(settings)
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.kill()


async def _equals(reading: Any, expected: int) -> bool:
    return bool(await reading == expected)
