"""``python -m bench --sections watch``: from saving a file in a watched repository to finding it.

A real stack (server, worker processes, RabbitMQ, PostgreSQL) indexes a generated repository with
``watch=true``; then, one save at a time, a file gets text nobody else holds, and the clock runs
from the write until

- ``text``: ``search_code(mode="text")`` returns a hit holding that text (polled every 50 ms);
- ``vector``: the chunk holding it has its embedding stored (read from the database).

No client call starts anything: the server's watch (server/watcher.py) sees the save, waits for
``WATCH_DEBOUNCE_MS`` of quiet, and runs an incremental job. Saves alternate between new files and
edits of existing ones; each waits until the previous one's job has ended, so each figure is one
save's own latency.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench.stack import BenchEnvironment
from models.settings import Settings
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient

#: Poll interval of the searches and database reads that stop the clock.
POLL_SECONDS = 0.05
#: Longest wait for one save before the section fails (a shared machine can be slow, not this slow).
GIVE_UP_SECONDS = 300.0


def _source(token: str) -> str:
    lines = [f'"""Freshly saved module {token}."""', ""]
    for index in range(3):
        lines += [f"def saved_{token}_{index}(value: int) -> int:", f"    return value + {index}  # {token}", ""]
    return "\n".join(lines)


async def _until(predicate: Any, what: str) -> None:
    deadline = time.perf_counter() + GIVE_UP_SECONDS
    while not await predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {GIVE_UP_SECONDS:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


async def _idle(client: McpClient, path: Path) -> None:
    """Until the watch has caught up once and no job runs on the repository."""

    async def idle() -> bool:
        listed = await client.call("list_repositories")
        repo = next((r for r in listed["repositories"] if r["path"] == str(path)), None)
        return bool(repo and repo["watch_caught_up_at"] and repo["active_job_id"] is None)

    await _until(idle, "the watch to settle")


async def _measure(client: McpClient, database_url: str, path: Path, saves: int) -> dict[str, list[float]]:
    started = await client.call("start_indexing_background", repo_path=str(path), watch=True)
    while (await client.call("get_indexing_status", job_id=started["job_id"]))["status"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        await asyncio.sleep(0.5)
    await _idle(client, path)
    existing = sorted(path.rglob("module_*.py"))
    text_s: list[float] = []
    vector_s: list[float] = []
    jobs_per_save: list[int] = []
    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for index in range(saves):
            await asyncio.sleep(1.0)  # quiet before each save: the previous job is over
            before = len((await client.call("list_indexing_jobs", repo_path=str(path), limit=500))["jobs"])
            # Letters only: full-text search splits a word at its digits, and would rank other files first.
            token = "saved" + "".join("abcdefghijklmnop"[int(digit, 16)] for digit in uuid.uuid4().hex[:12])
            target = path / f"saved_{index}.py" if index % 2 == 0 else existing[index % len(existing)]
            target.write_text(_source(token), encoding="utf-8")
            saved = time.perf_counter()

            async def found(token: str = token) -> bool:
                result = await client.call(
                    "search_code", query=token, repository=str(path), mode="text", scope="all", limit=5
                )
                return any(token in hit["snippet"] for hit in result["results"])

            async def embedded(token: str = token) -> bool:
                count = await db.fetchval(
                    "SELECT count(*) FROM chunks WHERE strpos(content, $1) > 0 AND embedding IS NOT NULL", token
                )
                return bool(count)

            await _until(found, f"save {index} to be findable")
            text_s.append(time.perf_counter() - saved)
            await _until(embedded, f"save {index}'s vector")
            vector_s.append(time.perf_counter() - saved)
            await _idle(client, path)
            after = len((await client.call("list_indexing_jobs", repo_path=str(path), limit=500))["jobs"])
            jobs_per_save.append(after - before)
            print(f"   watch save {index}: text {text_s[-1]:.2f} s, vector {vector_s[-1]:.2f} s", flush=True)
    finally:
        await db.close()
    return {"text": text_s, "vector": vector_s, "jobs": [float(count) for count in jobs_per_save]}


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "p50_s": round(float(np.percentile(array, 50)), 2),
        "p95_s": round(float(np.percentile(array, 95)), 2),
        "max_s": round(float(array.max()), 2),
    }


def watch_latency(bench: BenchEnvironment, *, embedder: str, files: int, lines: int, saves: int) -> dict[str, Any]:
    """Save-to-findable (text) and save-to-vector latencies on a watched repository of ``files`` files."""
    path = bench.work / f"watched-{files}"
    if not path.exists():
        generate_repo(path, files, lines, seed=44)
    path = path.resolve()
    env = bench.env(embedder=embedder)
    stack = bench.stack(env, processes=1, threads=2)
    stack.start_workers()
    stack.start_server()
    try:

        async def go() -> dict[str, list[float]]:
            async with stack.client() as client:
                return await _measure(client, env["CODEBASE_MCP_DATABASE_URL"], path, saves)

        measured = asyncio.run(go())
    finally:
        stack.stop()
    return {
        "embedder": embedder,
        "files": files,
        "saves": saves,
        "debounce_ms": int(
            env.get("CODEBASE_MCP_WATCH_DEBOUNCE_MS") or Settings.model_fields["watch_debounce_ms"].default
        ),
        "save_to_text": _stats(measured["text"]),
        "save_to_vector": _stats(measured["vector"]),
        "jobs_per_save": sorted({int(count) for count in measured["jobs"]}),
        "text_seconds": [round(value, 2) for value in measured["text"]],
        "vector_seconds": [round(value, 2) for value in measured["vector"]],
    }
