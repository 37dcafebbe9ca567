"""A permanent embedder error fails the job at once with its cause (issue 16, hostile-test defect 17).

Workers talk to an embedding service that is up but returns vectors of the wrong size (256 where
the index holds 384): before, the job sat ``blocked``, "waiting for the embedding service", for
``BLOCKED_TIMEOUT_SECONDS`` (600 s) before failing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import fake_embedding_server
from tests.integration.stack import Stack


@pytest.fixture(scope="module")
def wrong_size_embedder() -> Iterator[str]:
    with fake_embedding_server.running("--dimension", "256") as url:
        yield url


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], make_vhost: Callable[[], str], wrong_size_embedder: str) -> Iterator[Stack]:
    broker = make_vhost()
    log_dir = Path(tempfile.mkdtemp(prefix="cbm-test-reject-logs-"))
    # The server keeps the right embedder (it only searches); the workers get the wrong one.
    server = Stack(env={**base_env, "CODEBASE_MCP_BROKER_URL": broker}, log_dir=log_dir)
    workers = Stack(
        env={**base_env, "CODEBASE_MCP_BROKER_URL": broker, "CODEBASE_MCP_OLLAMA_URL": wrong_size_embedder},
        log_dir=log_dir,
        worker_processes=1,
    )
    workers.start_workers()
    server.start_server()
    yield server
    workers.stop()
    server.stop()


async def test_vectors_of_the_wrong_size_fail_the_job_at_once_naming_the_cause(stack: Stack, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def parse_invoice():\n    return 1\n", encoding="utf-8")
    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo))
        deadline = time.monotonic() + 120  # a fifth of BLOCKED_TIMEOUT_SECONDS
        while (status := await client.call("get_indexing_status", job_id=started["job_id"]))["status"] not in (
            "completed",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, f"still {status['status']}: {status['progress_message']}"
            await asyncio.sleep(0.5)
    assert status["status"] == "failed", status
    assert "returned vectors of shape (1, 256), expected (1, 384)" in status["error_message"], status
