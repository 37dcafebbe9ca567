"""A worker group frozen with SIGSTOP does not hold its messages for minutes (issue 16).

A stopped process keeps its TCP connections open, so RabbitMQ gives its unacknowledged deliveries
(prefetched and in hand) to nobody until the connections' heartbeats are missed. With the old
``heartbeat=60`` that was about 150 s while a healthy group waited idle; the broker URLs now ask
for ``heartbeat=10`` (RabbitMQ uses the lower of the two sides' values), which bounds the stall
at two or three heartbeat intervals. A group frozen inside a transaction also holds its batch
and job row locks, which every other worker then waits on (the test freezes group A until it
catches it so): PostgreSQL now ends such a session after ``DB_IDLE_IN_TRANSACTION_SECONDS`` (15 s
here, 60 s by default). To catch it there every time, not by luck, the test holds the job's row
while it freezes group A: the stage transactions that reach their job-row lock queue behind it with
their batch locks held, and once released they finish that statement and sit in the transaction
with a stopped client. Real server, two real
worker groups, real RabbitMQ and PostgreSQL: group A is frozen mid-job and stays frozen until the
job has completed on group B.

``-s`` prints the stall: from the freeze to the moment every batch in flight at the freeze has
moved on. Run with ``CBM_FROZEN_HEARTBEAT=60`` to measure the old setting (it then fails).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.fixtures.fake_embedding_server import set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, McpClient, Stack, finish, free_port

HEARTBEAT = int(os.environ.get("CBM_FROZEN_HEARTBEAT", "10"))
IDLE_IN_TRANSACTION = 15


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., Stack], make_vhost: Callable[[], str]) -> Stack:
    url = make_vhost().replace("heartbeat=10", f"heartbeat={HEARTBEAT}")
    # Small batches and a small window: many batches, each in some worker's hands for a while.
    env = {
        "CODEBASE_MCP_BROKER_URL": url,
        "CODEBASE_MCP_BATCH_SIZE": "5",
        "CODEBASE_MCP_BATCHES_IN_FLIGHT": "6",
        "CODEBASE_MCP_DB_IDLE_IN_TRANSACTION_SECONDS": str(IDLE_IN_TRANSACTION),
    }
    return start_stack(env=env, worker_processes=1, worker_threads=4)


@pytest.fixture
def second_group(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    group = stack._spawn(
        "workers-b",
        [str(BIN / "dramatiq"), "actors.worker", "--processes", "1", "--threads", "4"],
        {"dramatiq_queue_prefetch": "4", "dramatiq_prom_port": str(free_port())},
    )
    yield group
    Stack._kill(group, signal.SIGKILL)  # not the stack's own workers: its stop() does not know them


async def _in_flight(db: asyncpg.Pool, job_id: str) -> dict[int, tuple[str, object]]:
    rows = await db.fetch(
        "SELECT batch_no, state, token FROM index_batches WHERE job_id = $1 AND state NOT IN ('pending', 'recorded')",
        uuid.UUID(job_id),
    )
    return {row["batch_no"]: (row["state"], row["token"]) for row in rows}


async def _frozen_in_transaction(db: asyncpg.Pool) -> int:
    """Sessions idle inside the same transaction 0.5 s apart (a stopped process's: running ones move
    on) that hold row locks on batches or jobs (FOR UPDATE / FOR SHARE / UPDATE), which others wait on."""
    query = (
        "SELECT DISTINCT a.pid, a.xact_start FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.application_name = 'codebase-mcp' AND a.state = 'idle in transaction' "
        "AND l.relation IN ('index_batches'::regclass, 'indexing_jobs'::regclass) "
        "AND l.mode IN ('RowShareLock', 'RowExclusiveLock')"
    )
    first = {(row["pid"], row["xact_start"]) for row in await db.fetch(query)}
    await asyncio.sleep(0.5)
    return len(first & {(row["pid"], row["xact_start"]) for row in await db.fetch(query)})


async def _workers_waiting_on_a_row(db: asyncpg.Pool) -> int:
    query = (
        "SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.application_name = 'codebase-mcp' AND NOT l.granted"
    )
    return int(await db.fetchval(query))


async def _freeze_inside_a_transaction(
    db: asyncpg.Pool, client: McpClient, job_id: str, group: int
) -> tuple[int, float, int]:
    """SIGSTOP ``group`` while some of its stage transactions hold batch row locks; returns how many
    of its sessions were caught so, when it was frozen, and on which try.

    Freezing at a random moment catches a worker between transactions most of the time (its
    embedding calls run outside any), and the job can end first. So the job's row is held for a
    moment: the stage transactions that reach their job-row lock (the ledger takes it last, after
    the batch's) wait with their batch locks held, group A is stopped, the row is released, and
    their statements finish into a transaction whose client is stopped. A group that had none
    waiting is let go and tried again."""
    for attempt in range(1, 21):
        async with db.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM indexing_jobs WHERE id = $1 FOR UPDATE", uuid.UUID(job_id))
            queued_by = time.monotonic() + 3.0
            while await _workers_waiting_on_a_row(db) < 2 and time.monotonic() < queued_by:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # both groups' writers reach the lock
            os.killpg(group, signal.SIGSTOP)
            frozen_at = time.monotonic()
        caught = await _frozen_in_transaction(db)
        if caught:
            return caught, frozen_at, attempt
        os.killpg(group, signal.SIGCONT)
        status = await client.call("get_indexing_status", job_id=job_id)
        assert status["status"] == "running", f"the job ended before group A was caught in a transaction: {status}"
        await asyncio.sleep(0.2)
    raise AssertionError("group A was never caught holding row locks inside a transaction in 20 tries")


async def test_a_frozen_worker_group_hands_its_messages_to_a_healthy_one(
    stack: Stack, second_group: subprocess.Popen[bytes], db: asyncpg.Pool, fake_embedding_url: str
) -> None:
    repo = Path(tempfile.mkdtemp(prefix="cbm-test-frozen-")) / "repo"
    generate_repo(repo, 300, 40, seed=61)
    set_embed_delay(fake_embedding_url, 20.0)  # ~1 s of embedding per batch: messages stay in hand
    assert stack.workers is not None
    frozen_group = stack.workers.pid
    try:
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo), name="frozen")
            job_id = started["job_id"]
            deadline = time.monotonic() + 120
            while True:
                status = await client.call("get_indexing_status", job_id=job_id)
                if status["batches_done"] >= 3:
                    break
                assert time.monotonic() < deadline and status["status"] == "running", status
                await asyncio.sleep(0.2)
            # Freeze group A inside a transaction (holding row locks), the worse case; the hostile
            # tester's lockstop did the same. Group B and the server move on.
            in_transaction, frozen_at, tries = await _freeze_inside_a_transaction(db, client, job_id, frozen_group)
            held = await _in_flight(db, job_id)
            moved_after: float | None = None
            # The bound: a few heartbeat intervals or the idle-in-transaction timeout past the freeze,
            # plus the remaining work; the old 60 s heartbeat kept the held batches for minutes.
            limit = 3 * HEARTBEAT + IDLE_IN_TRANSACTION + 60
            while True:
                now = await _in_flight(db, job_id)
                if moved_after is None and all(now.get(batch) != where for batch, where in held.items()):
                    moved_after = time.monotonic() - frozen_at
                status = await client.call("get_indexing_status", job_id=job_id)
                if status["status"] != "running":
                    break
                elapsed = time.monotonic() - frozen_at
                assert elapsed < limit, (
                    f"job still {status['status']} {elapsed:.0f} s after group A was frozen (heartbeat={HEARTBEAT}): "
                    f"{len(held)} batches held at the freeze, {status['batches_done']}/{status['batches_total']} done"
                )
                await asyncio.sleep(0.2)
            completed_after = time.monotonic() - frozen_at
            final = await finish(client, job_id)
    finally:
        os.killpg(frozen_group, signal.SIGCONT)
        set_embed_delay(fake_embedding_url, 0.0)
    assert final["status"] == "completed", final
    assert final["files_indexed"] == final["files_total"] and final["files_failed"] == 0, final
    moved = f"{moved_after:.1f}" if moved_after is not None else "?"
    print(
        f"\nfrozen worker group (heartbeat={HEARTBEAT} s): {len(held)} batches in flight at the freeze, "
        f"{in_transaction} session(s) frozen holding batch or job row locks (try {tries}); "
        f"all batches moved on {moved} s later; job "
        f"completed {completed_after:.1f} s after the freeze, with group A still stopped"
    )
    async with db.acquire() as conn:
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT file_id, ordinal FROM chunks c JOIN files f ON f.id = c.file_id "
            "WHERE f.job_id = $1 GROUP BY 1, 2 HAVING count(*) > 1) d",
            uuid.UUID(job_id),
        )
    assert duplicates == 0
