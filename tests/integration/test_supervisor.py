"""The worker pool of ``codebase-mcp serve`` (server/supervisor.py) on real processes.

Stdio servers as an assistant starts them, no worker started by hand: the lease is exclusive and
dies with its holder; a server's pool that dies is restarted; closing the client's stdin stops the
server and its workers. Two servers sharing one pool, and the owner SIGKILLed mid-job, are in
tests/integration/test_inspector.py (driven by the MCP Inspector).
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
from tests.integration.stack import BIN, REPO_ROOT, McpClient, free_port, wait_for

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


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def test_a_dead_pool_is_restarted_and_closing_stdin_stops_it(pool_env: dict[str, str], tmp_path: Path) -> None:
    settings = pool_settings(pool_env)
    server = start_idle_server(pool_env, tmp_path / "server.log")
    try:
        await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=90, what="the server's pool")
        assert await lease_owner(settings) == server.pid
        # The whole pool dies (its guard, Dramatiq and its worker processes): the server restarts it.
        (guard,) = children(server.pid)
        os.killpg(guard, signal.SIGKILL)
        await wait_for(lambda: _equals(consumers(settings), 0), timeout=30, what="the pool to be gone")
        await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=90, what="the restarted pool")
        assert children(server.pid) != [guard]
        assert "restarting in" in (tmp_path / "server.log").read_text()
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
