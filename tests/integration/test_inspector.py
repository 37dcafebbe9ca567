"""The stdio server driven by the MCP Inspector, a client no one here wrote (``.ci/bootstrap`` installs it, pinned).

The client configuration is the one ``codebase-mcp setup`` prints for Cursor (the ``mcpServers``
shape the Inspector reads too), so the README's configuration is what runs. Nothing is started by
hand: the servers the Inspector starts run their own workers (server/supervisor.py).

- ``mcp-inspector --cli``: one-shot ``tools/list`` against a server it starts and stops.
- ``mcpdo`` (the Inspector's connection CLI, which keeps servers alive between commands, as an
  editor does): index a generated repository, follow its status to ``completed``, find a known
  function with ``search_code``; then, with two stdio servers alive at once (one worker pool),
  SIGKILL the pool's owner in the middle of a second job, which still completes, nothing done twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from server.setup import SERVER_NAME, client_configs, client_env, server_command
from tests.faults.test_crash_matrix import verify_completed
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import REPO_ROOT, wait_for
from tests.integration.test_background_indexing import control
from tests.integration.test_supervisor import (  # noqa: F401  (pool_env is a fixture)
    WORKER_PROCESSES,
    _equals,
    consumers,
    lease_owner,
    pool_env,
    pool_settings,
)

NODE_BIN = REPO_ROOT / ".ci" / "node" / "node_modules" / ".bin"
TOOLS = {
    "start_indexing_background",
    "get_indexing_status",
    "cancel_indexing_background",
    "list_indexing_jobs",
    "search_code",
    "list_repositories",
    "delete_repository",
    "watch_repository",
    "unwatch_repository",
}


class Inspector:
    """The Inspector's CLIs with a private daemon and home, reading one client configuration file."""

    def __init__(self, config: Path, home: Path) -> None:
        missing = [name for name in ("mcp-inspector", "mcpdo") if not (NODE_BIN / name).exists()]
        assert not missing, f"{missing} not in {NODE_BIN}: run .ci/bootstrap (it installs the MCP Inspector)"
        self.config = config
        home.mkdir(parents=True, exist_ok=True)
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        exports = self._run([str(NODE_BIN / "mcpdo"), "private"]).stdout
        # `mcpdo private` prints shell exports of an isolated, token-gated daemon.
        for name, value in re.findall(r"^export (\w+)=(.*)$", exports, flags=re.MULTILINE):
            self.env[name] = shlex.split(value)[0]
        assert "MCP_INSPECTOR_DAEMON_DIR" in self.env, exports

    def _run(self, command: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=getattr(self, "env", None), capture_output=True, text=True, timeout=timeout)

    def cli(self, *args: str) -> Any:
        """``mcp-inspector --cli`` against the configured server: starts it, one method, stops it."""
        done = self._run(
            [str(NODE_BIN / "mcp-inspector"), "--cli", "--config", str(self.config), "--server", SERVER_NAME, *args]
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def connect(self, connection: str) -> None:
        done = self._run(
            [
                str(NODE_BIN / "mcpdo"),
                "--config",
                str(self.config),
                "--connection",
                connection,
                "connect",
                SERVER_NAME,
                "--connect-timeout",
                "120000",
            ]
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    def call(self, connection: str, tool: str, **arguments: Any) -> dict[str, Any]:
        """One tools/call over a live connection; the tool's structured answer (an error fails the test)."""
        done = self._run(
            [
                str(NODE_BIN / "mcpdo"),
                "--format",
                "json",
                f"@{connection}",
                "tools/call",
                tool,
                "--tool-args-json",
                json.dumps(arguments),
            ]
        )
        answer, _ = json.JSONDecoder().raw_decode(done.stdout.lstrip())
        assert done.returncode == 0 and not answer.get("isError"), (tool, arguments, done.stdout[-2000:])
        return dict(answer["structuredContent"])

    def stop(self) -> None:
        """Stop the daemon: it closes every server's stdin, as an editor does when it quits."""
        self._run([str(NODE_BIN / "mcpdo"), "daemon", "stop"], timeout=60)


def write_client_config(path: Path, env: dict[str, str]) -> Path:
    """The Cursor configuration ``codebase-mcp setup`` prints for this environment."""
    # The suite's run-this-checkout and exporter-port variables, which no user would set.
    extra: dict[str, str] = {k: env[k] for k in ("PYTHONPATH", "dramatiq_prom_port", "dramatiq_prom_db") if k in env}
    config = client_configs(server_command(), {**client_env(env), **extra}, "http://127.0.0.1:8765/mcp")["cursor"]
    path.write_text(config)
    return path


def known_function(repo: Path) -> tuple[str, str]:
    """A function the generator wrote, and the file it is in."""
    sources = {str(path.relative_to(repo)): path.read_text() for path in sorted(repo.rglob("*.py"))}
    for relative, text in sources.items():
        for name in re.findall(r"^def ([a-z_][a-z0-9_]{6,})\(", text, flags=re.MULTILINE):
            # Named in no other file (the generator's modules call each other's exports).
            if sum(name in other for other in sources.values()) == 1:
                return name, relative
    raise AssertionError(f"no top-level function in {repo}")


async def follow(inspector: Inspector, connection: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        status = await asyncio.to_thread(inspector.call, connection, "get_indexing_status", job_id=job_id)
        return status if status["status"] in ("completed", "failed", "cancelled") else None

    result: dict[str, Any] = await wait_for(finished, timeout=timeout, interval=0.5, what=f"job {job_id}")
    return result


async def finds(inspector: Inspector, connection: str, repo: Path) -> None:
    name, path = known_function(repo)
    result = await asyncio.to_thread(inspector.call, connection, "search_code", query=name, repository=str(repo))
    hits = [(hit["file_path"], hit["symbol"], hit["snippet"]) for hit in result["results"][:5]]
    assert any(file == path and (symbol == name or f"def {name}(" in snippet) for file, symbol, snippet in hits), (
        name,
        path,
        [(file, symbol) for file, symbol, _ in hits],
    )


async def test_the_inspector_indexes_and_searches_with_one_pool_for_two_servers(
    pool_env: dict[str, str],  # noqa: F811  (the fixture imported above)
    db: asyncpg.Pool,
    fake_embedding_url: str,
    tmp_path: Path,
) -> None:
    settings = pool_settings(pool_env)
    inspector = Inspector(write_client_config(tmp_path / "mcp.json", pool_env), tmp_path / "home")
    listed = await asyncio.to_thread(inspector.cli, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS

    small, big = tmp_path / "small", tmp_path / "big"
    generate_repo(small, 40, 50, seed=1111)
    generate_repo(big, 240, 60, seed=1112)
    try:
        await asyncio.to_thread(inspector.connect, "one")
        started = await asyncio.to_thread(inspector.call, "one", "start_indexing_background", repo_path=str(small))
        final = await follow(inspector, "one", started["job_id"])
        assert final["status"] == "completed" and final["files_indexed"] == 40, final
        await finds(inspector, "one", small)
        owner = await lease_owner(settings)
        assert owner is not None

        # A second editor window: a second stdio server, still one pool (the first server's).
        await asyncio.to_thread(inspector.connect, "two")
        for _ in range(3):
            await asyncio.sleep(1.5)
            assert await consumers(settings) == WORKER_PROCESSES
            assert await lease_owner(settings) == owner
        control(fake_embedding_url, {"delay_ms_per_text": 15})  # the job must outlive the kill
        second = await asyncio.to_thread(inspector.call, "two", "start_indexing_background", repo_path=str(big))
        job_id = second["job_id"]

        async def some_batch_done() -> bool:
            row = await db.fetchrow("SELECT status, batches_done FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
            return bool(row["batches_done"] > 0 or row["status"] != "running")

        await wait_for(some_batch_done, timeout=120, what="the first batch")
        os.kill(owner, signal.SIGKILL)  # the first server, which owns the pool
        at_kill = await db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
        assert at_kill["status"] == "running" and at_kill["batches_done"] < at_kill["batches_total"], dict(at_kill)

        async def taken_over() -> bool:
            return await lease_owner(settings) not in (None, owner)

        await wait_for(taken_over, timeout=30, what="the second server to take the pool over")
        await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=60, what="the new pool")
        at_takeover = await db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
        print(
            f"owner SIGKILLed at {at_kill['batches_done']}/{at_kill['batches_total']} batches; "
            f"the second server's pool attached at {at_takeover['batches_done']}"
        )
        # The rest of the job was left to the new pool: the killed owner's workers stopped with it.
        assert at_takeover["batches_done"] < at_takeover["batches_total"], dict(at_takeover)
        final = await follow(inspector, "two", job_id)
        assert final["status"] == "completed", final
        await verify_completed(db, job_id, big)  # type: ignore[arg-type]
        for job in (started["job_id"], job_id):
            events = await db.fetch("SELECT event FROM job_events WHERE job_id = $1", uuid.UUID(job))
            assert [row["event"] for row in events].count("completed") == 1
        await finds(inspector, "two", big)
        await wait_for(lambda: _equals(consumers(settings), WORKER_PROCESSES), timeout=60, what="exactly one pool")
    finally:
        control(fake_embedding_url, {"delay_ms_per_text": 0})
        await asyncio.to_thread(inspector.stop)
    await wait_for(lambda: _equals(consumers(settings), 0), timeout=60, what="the workers to stop with the servers")
