"""A job whose messages were lost from RabbitMQ says so, and the upkeep brings it back (issue 16).

The workers are SIGKILLed mid-job, every queue of the vhost is purged (the messages of the batches
in flight are gone, as after a vhost was deleted and recreated), and the workers start again.
Nothing is left to move the job: the server's upkeep (every 30 s) first notes the stall (a
``stalled`` event, the progress message says when the batches are re-sent), then re-sends the
batches idle past ``STALE_BATCH_SECONDS`` (a ``redispatched`` event, a progress note), and the job
completes with every file once. Before, the status kept its last progress line, unchanged, for
the whole ``STALE_BATCH_SECONDS`` (15 min by default). Real server, workers, RabbitMQ, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from tests.fixtures.fake_embedding_server import set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import Stack, finish

STALE_SECONDS = 40
QUEUES = ("index.plan", "index.chunk", "index.embed", "index.write", "index.coordinate")


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., Stack]) -> Stack:
    env = {
        "CODEBASE_MCP_STALE_BATCH_SECONDS": str(STALE_SECONDS),
        "CODEBASE_MCP_STALL_NOTICE_SECONDS": "3",
        "CODEBASE_MCP_BATCH_SIZE": "5",
    }
    return start_stack(env=env, worker_processes=1)


def _purge_all(broker_url: str) -> None:
    vhost = unquote(urlsplit(broker_url).path.lstrip("/"))
    for queue in QUEUES:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            # A queue never declared is no loss; rabbitmqctl then fails, which is fine.
            subprocess.run(["rabbitmqctl", "-q", "purge_queue", "-p", vhost, name], capture_output=True, timeout=60)


async def _events(db: asyncpg.Pool, job_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    rows = await db.fetch("SELECT event, detail FROM job_events WHERE job_id = $1 ORDER BY id", uuid.UUID(job_id))
    return [(row["event"], json.loads(row["detail"]) if row["detail"] else None) for row in rows]


async def test_a_job_whose_messages_were_lost_says_so_and_completes(
    stack: Stack, db: asyncpg.Pool, fake_embedding_url: str
) -> None:
    repo = Path(tempfile.mkdtemp(prefix="cbm-test-lost-")) / "repo"
    generate_repo(repo, 200, 40, seed=71)
    set_embed_delay(fake_embedding_url, 10.0)
    try:
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo), name="lost")
            job_id = started["job_id"]
            deadline = time.monotonic() + 120
            while (status := await client.call("get_indexing_status", job_id=job_id))["batches_done"] < 3:
                assert time.monotonic() < deadline and status["status"] == "running", status
                await asyncio.sleep(0.2)
            stack.kill_workers(signal.SIGKILL)
            _purge_all(stack.env["CODEBASE_MCP_BROKER_URL"])
            lost_at = time.monotonic()
            stack.start_workers()
            set_embed_delay(fake_embedding_url, 0.0)
            messages: list[str] = []
            while (status := await client.call("get_indexing_status", job_id=job_id))["status"] == "running":
                if not messages or messages[-1] != status["progress_message"]:
                    messages.append(status["progress_message"])
                assert time.monotonic() - lost_at < STALE_SECONDS + 120, (status, messages)
                await asyncio.sleep(0.5)
            recovered_after = time.monotonic() - lost_at
            final = await finish(client, job_id)
    finally:
        set_embed_delay(fake_embedding_url, 0.0)
    assert final["status"] == "completed", final
    assert final["files_indexed"] == final["files_total"] and final["files_failed"] == 0, final
    events = await _events(db, job_id)
    names = [name for name, _ in events]
    # Before: neither event, and the progress message never changed while the job was stuck.
    assert "stalled" in names and "redispatched" in names, names
    assert names.index("stalled") < names.index("redispatched") < names.index("completed"), names
    redispatched = next(detail for name, detail in events if name == "redispatched")
    assert redispatched is not None and redispatched["batches"] and redispatched["idle_seconds"] == STALE_SECONDS
    assert any(message.startswith("no batch has moved for") for message in messages), messages
    # The re-send note lasts only until the re-sent batch is recorded (under a second), so the
    # polling may miss it; the event above is its lasting trace.
    async with db.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM files f JOIN repositories r ON r.id = f.repository_id WHERE r.path = $1",
            str(repo.resolve()),
        )
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT file_id, ordinal FROM chunks c JOIN files f ON f.id = c.file_id "
            "WHERE f.job_id = $1 GROUP BY 1, 2 HAVING count(*) > 1) d",
            uuid.UUID(job_id),
        )
    assert stored == final["files_total"] and duplicates == 0
    print(
        f"\nlost messages: {len(redispatched['batches'])} batches re-sent; job moving again and completed "
        f"{recovered_after:.1f} s after the loss (STALE_BATCH_SECONDS={STALE_SECONDS}, upkeep every 30 s)"
    )
