"""After a reboot the local RabbitMQ is stopped: ``codebase-mcp serve`` starts it (server/local_broker.py).

A RabbitMQ node of the test's own (tests/fixtures/rabbitmq_node.py), laid out but not started,
stands for the machine's broker after a reboot: the servers get its ``RABBITMQ_*`` variables, as
``rabbitmq-server`` reads them, and its URL. Real stdio servers as an assistant starts them:

1. A tool call that needs the broker starts it and waits for it, instead of failing.
2. A server started while the broker is down, with a job that was running when it went down, still
   starts and answers at once (it used to exit: resuming the job publishes), starts the broker,
   resumes the job and its own workers complete it.
3. The same first start driven by the MCP Inspector from the configuration ``setup`` prints.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from server.setup import client_configs, client_env, server_command
from tests.fixtures.generate_test_repo import generate_repo
from tests.fixtures.rabbitmq_node import RabbitNode, make_private_node
from tests.integration.stack import REPO_ROOT, finish, free_port
from tests.integration.test_broker_down import jobs_in
from tests.integration.test_inspector import Inspector, finds, follow
from tests.integration.test_supervisor import stdio_session


@pytest.fixture
def stopped_node() -> Iterator[RabbitNode]:
    """A private node's folders and configuration; not started (the test's servers start it)."""
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed")
    node = make_private_node("cbmauto", free_port(), free_port())
    yield node
    node._ctl("stop")
    shutil.rmtree(node.base, ignore_errors=True)


def node_runs(node: RabbitNode) -> bool:
    return node._ctl("status", timeout=60).returncode == 0


def server_env(
    base_env: dict[str, str], database: str, node: RabbitNode, data_dir: Path, workers: str
) -> dict[str, str]:
    rabbitmq = {key: value for key, value in node._env().items() if key.startswith("RABBITMQ_")}
    return {
        **base_env,
        **rabbitmq,
        "CODEBASE_MCP_DATABASE_URL": database,
        "CODEBASE_MCP_BROKER_URL": node.url,
        "CODEBASE_MCP_DATA_DIR": str(data_dir),
        "CODEBASE_MCP_WORKERS": workers,
        "CODEBASE_MCP_WORKER_THREADS": "2",
        # A node's first boot on a loaded CI machine can take a while; the default is 20 s.
        "CODEBASE_MCP_BROKER_START_WAIT_SECONDS": "150",
        "dramatiq_prom_port": str(free_port()),
        "PYTHONPATH": str(REPO_ROOT),
    }


async def test_serve_starts_a_stopped_local_rabbitmq_and_resumes_the_job_it_interrupted(
    base_env: dict[str, str],
    make_database: Callable[[str], Awaitable[str]],
    stopped_node: RabbitNode,
    tmp_path: Path,
) -> None:
    # A database of its own: no other test's live job is resumed here.
    own_database = await make_database("broker_autostart")
    repo = tmp_path / "repo"
    repo.mkdir()
    for index in range(12):
        (repo / f"module_{index}.py").write_text(f"def rebooted_helper_{index}(value):\n    return value * {index}\n")
    data_dir = tmp_path / "data"
    assert not node_runs(stopped_node)

    # 1. No worker (WORKERS=never): the job stays running, its plan message queued in the node.
    first = server_env(base_env, own_database, stopped_node, data_dir, "never")
    async with stdio_session(first, tmp_path / "first.log") as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name="rebooted")
        assert started["status"] == "running", started
    assert node_runs(stopped_node), "the tool call returned a job id, so the server must have started the node"
    assert "starting it with" in (tmp_path / "first.log").read_text(encoding="utf-8")

    # The reboot: the server is gone, the broker stopped, the job still 'running' in the database.
    stopped_node.stop()
    assert not node_runs(stopped_node)
    assert [row["status"] for row in await jobs_in(own_database)] == ["running"]

    # 2. A new server, its own workers this time, comes up with the broker down.
    second = server_env(base_env, own_database, stopped_node, data_dir, "auto")
    began = time.monotonic()
    async with stdio_session(second, tmp_path / "second.log") as client:
        answered_after = time.monotonic() - began
        listed = await client.call("list_indexing_jobs")
        assert [job["status"] for job in listed["jobs"]] == ["running"], listed
        final = await finish(client, started["job_id"], timeout=240)
        assert final["status"] == "completed", final
        assert final["files_indexed"] == 12, final
        hits = await client.call("search_code", query="rebooted_helper_7", limit=3)
    print(
        f"\nserver with RabbitMQ down answered initialize after {answered_after:.1f}s; "
        f"job completed {time.monotonic() - began:.1f}s after the server started"
    )
    assert any("module_7.py" in hit["file_path"] for hit in hits["results"]), hits
    log = (tmp_path / "second.log").read_text(encoding="utf-8")
    assert "starting it with" in log and "local RabbitMQ is up" in log, log[-3000:]


async def test_an_assistant_adds_the_server_while_rabbitmq_is_stopped(
    base_env: dict[str, str],
    make_database: Callable[[str], Awaitable[str]],
    stopped_node: RabbitNode,
    tmp_path: Path,
) -> None:
    """The MCP Inspector (a client no one here wrote) starts the server from the configuration
    ``setup`` prints, with the broker stopped: connect, index, follow, search, as an assistant does."""
    repo = tmp_path / "repo"
    generate_repo(repo, 20, 30, seed=17)
    env = server_env(base_env, await make_database("broker_autostart"), stopped_node, tmp_path / "data", "auto")
    # The node's RABBITMQ_* variables stand for the machine's defaults; the rest as in test_inspector.
    extra = {key: value for key, value in env.items() if key.startswith("RABBITMQ_")}
    extra |= {key: env[key] for key in ("PYTHONPATH", "dramatiq_prom_port", "dramatiq_prom_db") if key in env}
    config = client_configs(server_command(), {**client_env(env), **extra}, "http://127.0.0.1:8765/mcp")["cursor"]
    (tmp_path / "mcp.json").write_text(config)
    inspector = Inspector(tmp_path / "mcp.json", tmp_path / "home")
    try:
        await asyncio.to_thread(inspector.connect, "editor")
        started = await asyncio.to_thread(inspector.call, "editor", "start_indexing_background", repo_path=str(repo))
        final = await follow(inspector, "editor", started["job_id"], timeout=240)
        assert final["status"] == "completed" and final["files_failed"] == 0, final
        await finds(inspector, "editor", repo)
    finally:
        await asyncio.to_thread(inspector.stop)
    assert node_runs(stopped_node)
