"""RabbitMQ down or no worker: a stdio server answers at once with an error or a status naming the fix.

Each test's server has a database of its own on the session's PostgreSQL, so that no other test's
live job is resumed (which would publish) while the broker is unreachable.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.supervisor import WORKER_COMMAND
from tests.integration.stack import ToolCallError, free_port
from tests.integration.test_supervisor import stdio_session


@pytest.fixture
async def own_database(database_url: str) -> AsyncIterator[str]:
    plain = database_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"broker_down_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = database_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def not_amqp() -> Iterator[int]:
    """A port that accepts TCP connections and closes them at once: open, but no RabbitMQ behind it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


def server_env(base_env: dict[str, str], database: str, broker_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **base_env,
        "CODEBASE_MCP_DATABASE_URL": database,
        "CODEBASE_MCP_BROKER_URL": broker_url,
        "CODEBASE_MCP_DATA_DIR": str(tmp_path / "data"),
        "CODEBASE_MCP_WORKERS": "never",
    }


async def jobs_in(database: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [dict(row) for row in await conn.fetch("SELECT status, error_message FROM indexing_jobs")]
    finally:
        await conn.close()


async def test_start_with_rabbitmq_down_answers_at_once_and_names_the_fix(
    base_env: dict[str, str], own_database: str, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens there
    env = server_env(
        base_env, own_database, f"amqp://guest:guest@127.0.0.1:{closed}/%2F?connection_attempts=5", tmp_path
    )
    async with stdio_session(env, tmp_path / "server.log") as client:
        start = time.perf_counter()
        with pytest.raises(ToolCallError) as raised:
            await client.call("start_indexing_background", repo_path=str(tmp_path))
        elapsed = time.perf_counter() - start
    message = str(raised.value)
    print(f"start_indexing_background with RabbitMQ down answered in {elapsed:.3f}s: {message}")
    assert f"RabbitMQ at 127.0.0.1:{closed} is unreachable" in message
    assert "codebase-mcp setup" in message and "CODEBASE_MCP_BROKER_URL" in message
    # Refused before admission: no job was created to hold a slot.
    assert await jobs_in(own_database) == []


async def test_publish_failing_after_admission_fails_the_job_instead_of_holding_a_slot(
    base_env: dict[str, str], own_database: str, not_amqp: int, tmp_path: Path
) -> None:
    # The port answers (the fast probe passes) but no broker speaks AMQP there: publishing fails
    # after the job row is committed, the case issue 16 found holding a 'running' slot forever.
    url = f"amqp://guest:guest@127.0.0.1:{not_amqp}/%2F?connection_attempts=1&socket_timeout=1"
    env = server_env(base_env, own_database, url, tmp_path)
    async with stdio_session(env, tmp_path / "server.log") as client:
        with pytest.raises(ToolCallError) as raised:
            await client.call("start_indexing_background", repo_path=str(tmp_path))
        assert f"RabbitMQ at 127.0.0.1:{not_amqp} is unreachable" in str(raised.value)
        rows = await jobs_in(own_database)
        assert [row["status"] for row in rows] == ["failed"], rows
        assert "could not hand the job to the workers" in rows[0]["error_message"]
        # The slot is free and the repository is not stuck behind it: a new attempt is a new job.
        with pytest.raises(ToolCallError):
            await client.call("start_indexing_background", repo_path=str(tmp_path))
    assert sorted(row["status"] for row in await jobs_in(own_database)) == ["failed", "failed"]


async def test_never_with_no_worker_attached_says_so_in_the_status(
    base_env: dict[str, str], own_database: str, make_vhost: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def alone():\n    return 1\n")
    env = server_env(base_env, own_database, make_vhost(), tmp_path)
    async with stdio_session(env, tmp_path / "server.log") as client:
        started = await client.call("start_indexing_background", repo_path=str(repo))
        status = await client.call("get_indexing_status", job_id=started["job_id"])
        assert status["status"] == "running"
        assert "no worker is attached to RabbitMQ and CODEBASE_MCP_WORKERS=never" in status["progress_message"]
        assert f"`{WORKER_COMMAND}`" in status["progress_message"]
        await client.call("cancel_indexing_background", job_id=started["job_id"])
