"""The ``twophase`` bench section (issue 12): searchable by words first, semantic later, progress all along.

One job with the product's embedder (``CODEBASE_MCP_EMBEDDER``, default ``local``) through the
real stack (server, one plain ``dramatiq actors.worker`` process over every queue, RabbitMQ,
PostgreSQL), polled through the MCP tools as a client would:

- ``first_text_hit_last_batch_s``: from the start call to the first ``search_code`` (mode text,
  path filter) that finds a function of a file in the last-planned batch;
- ``semantic_100_s``: from the start call to ``semantic_percentage`` 100 (the job completes then);
- ``raw_embedder_s``: the same embedder, in this process with the stack stopped, embedding the
  job's distinct chunk texts in the calls the embed stage makes (``EMBED_BATCH_SIZE``, longest
  first); ``efficiency`` is raw ÷ pipeline (issue 12: >= 0.85, issue 15: >= 0.90);
- ``embedder_call_s``, ``model_busy_percent``, ``model_waiting_s``, ``calls_beyond_raw_s``: the
  worker's seconds inside embedder calls (its Prometheus exporter, at the end of the job), their
  share of the job, the job's seconds the model spent outside any call (before the first, between
  calls, after the last) and how much longer the calls took than the raw loop: the diagnosis of
  ``efficiency`` in the same run;
- ``cpu_during_job``: CPU seconds of the worker, the server, PostgreSQL, RabbitMQ (shared: an upper
  bound) and this process (the client's polls) from the start call to the end, and the machine's
  idle and steal shares: what else ran on the model's cores (``calls_beyond_raw_s``), when they
  stood idle, and what the VM's host took;
- ``longest_progress_gap_s``: the longest time between two status polls that differ in any of
  ``progress_percentage``, ``searchable_percentage``, ``semantic_percentage``, ``chunks_embedded``
  (target <= 10 s), and the same for ``progress_percentage`` alone; ``first_vector_s`` and the
  longest gap after it separate the worker's one-time model load.

By default the stack is warmed first: a one-file job runs to completion before the measured one,
so the measured job finds the worker's model loaded, as on a server that has been up for a
while, like the raw loop, which warms its model before timing. The warm-up job's figures
(``warmup_first_vector_s``, ``warmup_s``: a job started with a freshly started stack) are
reported beside it. ``cold=True`` (``--twophase-cold``) starts the measured job with the stack
instead, as the section did before the warm-up existed: the worker's boot-time model load then
shares the cores with the text phase and delays the first embedder call.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.process_cpu import broker_cpu, broker_delta, postmaster_pid, tree_cpu_seconds
from bench.stack import BenchEnvironment, embedder_seconds
from models.lifecycle import TERMINAL_STATUSES
from models.settings import Settings
from tests.integration.stack import McpClient, Stack, free_port

#: How often the bench asks for the job's status (a client polling its progress bar).
POLL_SECONDS = 0.5
_FUNCTION = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_][A-Za-z0-9_]{5,})", re.MULTILINE)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def last_batch_target(db: asyncpg.Pool, job_id: str, repo: Path) -> tuple[str, str] | None:
    """``(path, function name)`` from the job's last-planned batch, once the plan is written."""
    files = await db.fetchval(
        "SELECT files FROM index_batches WHERE job_id = $1 ORDER BY batch_no DESC LIMIT 1", uuid.UUID(job_id)
    )
    if files is None:
        return None
    import json

    for entry in json.loads(files) if isinstance(files, str) else files:
        path = str(entry["path"])
        match = _FUNCTION.search((repo / path).read_text(encoding="utf-8", errors="replace"))
        if match:
            return path, match.group(1)
    return None


#: The status figures whose change counts as progress a client sees (``longest_progress_gap_s``).
PROGRESS_FIGURES = ("progress_percentage", "searchable_percentage", "semantic_percentage", "chunks_embedded")


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every status poll of one job: ``(seconds since the first poll began, status)``, the last terminal."""

    polls: tuple[tuple[float, dict[str, Any]], ...]

    @property
    def final(self) -> dict[str, Any]:
        return self.polls[-1][1]

    @property
    def seconds(self) -> float:
        return self.polls[-1][0]

    def first(self, predicate: Callable[[dict[str, Any]], bool]) -> float | None:
        """Seconds to the first poll whose status satisfies ``predicate`` (None: never)."""
        return next((at for at, status in self.polls if predicate(status)), None)

    def changes(self, figures: Sequence[str] = PROGRESS_FIGURES) -> list[float]:
        """0.0, then the time of every poll where one of ``figures`` differs from the poll before."""
        out = [0.0]
        for (_, before), (at, status) in zip(self.polls, self.polls[1:], strict=False):
            if any(status[name] != before[name] for name in figures):
                out.append(at)
        return out

    def longest_gap(self, figures: Sequence[str] = PROGRESS_FIGURES, since: float = 0.0) -> float:
        """The longest time between two changes of ``figures`` at or after ``since`` (0.0 with fewer than two)."""
        times = [at for at in self.changes(figures) if at >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def follow_job(
    client: McpClient,
    job_id: str,
    *,
    on_poll: Callable[[float, dict[str, Any]], Awaitable[None]] | None = None,
    interval: float = POLL_SECONDS,
) -> Timeline:
    """Poll ``get_indexing_status`` every ``interval`` until the job ends, as a client's progress bar would.

    ``on_poll(seconds, status)`` runs after each poll (a search the bench times while the job runs).
    """
    begin = time.perf_counter()
    polls: list[tuple[float, dict[str, Any]]] = []
    while True:
        status = await client.call("get_indexing_status", job_id=job_id)
        polls.append((time.perf_counter() - begin, status))
        if on_poll is not None:
            await on_poll(polls[-1][0], status)
        if status["status"] in TERMINAL_STATUSES:
            return Timeline(tuple(polls))
        await asyncio.sleep(interval)


async def follow_two_phases(client: McpClient, db: asyncpg.Pool, job_id: str, repo: Path) -> dict[str, Any]:
    begin = time.perf_counter()
    target: tuple[str, str] | None = None
    text_hit: float | None = None

    async def look_for_text(_: float, status: dict[str, Any]) -> None:
        nonlocal target, text_hit
        if target is None:
            target = await last_batch_target(db, job_id, repo)
        if target is not None and text_hit is None:
            found = await client.call("search_code", query=target[1], mode="text", path_prefix=target[0], limit=1)
            if found["results"]:
                text_hit = time.perf_counter() - begin

    timeline = await follow_job(client, job_id, on_poll=look_for_text)
    status = timeline.final
    if status["status"] != "completed":
        raise RuntimeError(f"twophase job ended {status['status']}: {status.get('error_message')}")
    first_vector = timeline.first(lambda s: s["chunks_embedded"] > 0)
    searchable_100 = timeline.first(lambda s: s["searchable_percentage"] == 100)
    semantic_100 = timeline.first(lambda s: s["semantic_percentage"] == 100 or s["status"] == "completed")
    return {
        "first_text_hit_last_batch_s": None if text_hit is None else round(text_hit, 1),
        # The worker loads the model at boot: a job started with the stack waits for it once.
        "first_vector_s": None if first_vector is None else round(first_vector, 1),
        "longest_gap_after_first_vector_s": round(
            0.0 if first_vector is None else timeline.longest_gap(since=first_vector), 1
        ),
        "searchable_100_s": None if searchable_100 is None else round(searchable_100, 1),
        "semantic_100_s": round(timeline.seconds if semantic_100 is None else semantic_100, 1),
        "longest_progress_gap_s": round(timeline.longest_gap(), 1),
        "longest_bar_gap_s": round(timeline.longest_gap(("progress_percentage",)), 1),
        "status_polls": len(timeline.changes()),
        "files": status["files_indexed"],
        "chunks": status["chunks_created"],
        "target": list(target) if target else None,
    }


async def job_texts(db: asyncpg.Pool, job_id: str) -> list[str]:
    """The distinct texts the job's embed stage sent (chunk header and content, as embedded)."""
    from actors.chunking import embedding_text

    rows = await db.fetch(
        "SELECT c.header, c.content FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.job_id = $1",
        uuid.UUID(job_id),
    )
    return list(dict.fromkeys(embedding_text(row["header"], row["content"]) for row in rows))


async def raw_seconds(texts: list[str], settings: Settings) -> float:
    """Seconds the product's embedder takes for ``texts`` in the embed stage's calls, nothing else around it."""
    from actors.embedders import build_embedder, configured_dimension_async
    from actors.pipeline import plan_embedder_calls

    embedder = build_embedder(settings, await configured_dimension_async(settings))
    await embedder.embed(texts[:8])  # load the model outside the timing, as the workers preload it
    calls = plan_embedder_calls([(str(n).encode(), body) for n, body in enumerate(texts)], settings.embed_batch_size)
    start = time.perf_counter()
    for call in calls:
        await embedder.embed([body for _, body in call])
    seconds = time.perf_counter() - start
    await embedder.aclose()
    return seconds


async def warm_up(client: McpClient, repo: Path) -> dict[str, Any]:
    """Index a one-file repository to completion: the worker's model is loaded and has embedded.

    Its one text names this run (a fresh uuid), so no vector of it can serve the measured job
    from the embedding cache.
    """
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "warm_up.py").write_text(
        f'def warm_up_the_stack() -> str:\n    return "{uuid.uuid4().hex}"\n', encoding="utf-8"
    )
    begin = time.perf_counter()
    started = await client.call("start_indexing_background", repo_path=str(repo), name=repo.name)
    timeline = await follow_job(client, started["job_id"])
    if timeline.final["status"] != "completed":
        raise RuntimeError(f"warm-up job ended {timeline.final['status']}: {timeline.final.get('error_message')}")
    first_vector = timeline.first(lambda s: s["chunks_embedded"] > 0)
    return {
        "warmup_first_vector_s": None if first_vector is None else round(first_vector, 1),
        "warmup_s": round(time.perf_counter() - begin, 1),
    }


def _machine_ticks() -> tuple[int, int, int]:
    """(idle + iowait, steal, all) ticks of every CPU so far, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], fields[7], sum(fields[:8])  # guest time is already in user


class JobCpu:
    """CPU seconds of each part of the stack, and the machine's idle and steal shares, from start to stop.

    Where ``calls_beyond_raw_s`` comes from: what else ran on the model's cores during the job.
    RabbitMQ is shared by every vhost on the machine, so its figure is an upper bound of the job's.
    """

    def __init__(self, stack: Stack, bench: BenchEnvironment) -> None:
        self.stack, self.bench = stack, bench
        self._before: dict[str, float] = {}
        self._broker: dict[int, float] = {}
        self._ticks = (0, 0, 0)

    def _parts(self) -> dict[str, float]:
        workers, server = self.stack.workers, self.stack.server
        return {
            "worker": tree_cpu_seconds(workers.pid if workers is not None else None),
            "server": tree_cpu_seconds(server.pid if server is not None else None),
            "postgres": tree_cpu_seconds(postmaster_pid(self.bench.pg_data_dir)),
            # This process: the client's status polls and searches (and nothing else while the job runs).
            "bench_client": sum(os.times()[:2]),
        }

    def start(self) -> None:
        self._before, self._broker, self._ticks = self._parts(), broker_cpu(), _machine_ticks()

    def stop(self) -> dict[str, float]:
        after, ticks = self._parts(), _machine_ticks()
        used = {f"{name}_cpu_s": round(after[name] - self._before[name], 1) for name in after}
        idle, steal, total = (now - before for now, before in zip(ticks, self._ticks, strict=True))
        return {
            **used,
            "rabbitmq_cpu_s": round(broker_delta(self._broker), 1),
            # Shares of all CPUs' time during the job: idle, and taken by the host from this VM.
            "machine_idle_percent": round(100 * idle / total, 1) if total else 0.0,
            "machine_steal_percent": round(100 * steal / total, 1) if total else 0.0,
            "cpus": os.cpu_count() or 1,
        }


def twophase(
    bench: BenchEnvironment, path: Path, *, embedder: str, processes: int, threads: int, cold: bool = False
) -> dict[str, Any]:
    # WORKERS=never: the server must not start a pool of its own beside the stack's worker (it
    # would in its first second, before the stack's worker is seen attached): two processes
    # would share the model's two cores and the figures would not be this layout's.
    env = bench.env(embedder=embedder, workers="never")
    metrics_port = free_port()
    env["dramatiq_prom_port"] = str(metrics_port)
    stack = bench.stack(env, processes=processes, threads=threads)
    stack.start_workers()
    stack.start_server()
    database = _plain(env["CODEBASE_MCP_DATABASE_URL"])
    cpu = JobCpu(stack, bench)

    async def go() -> tuple[dict[str, Any], list[str], float]:
        db = await asyncpg.create_pool(database, min_size=1, max_size=2)
        try:
            async with stack.client() as client:
                warm: dict[str, Any] = {}
                if not cold:
                    warm = await warm_up(client, bench.work / "twophase-warm-up")
                # The warm-up's embedder seconds are not the measured job's.
                calls_before = embedder_seconds(metrics_port) if not cold else 0.0
                cpu.start()
                started = await client.call("start_indexing_background", repo_path=str(path), name=path.name)
                result = await follow_two_phases(client, db, started["job_id"], path)
                used = cpu.stop()
            return {**warm, **result, "cpu_during_job": used}, await job_texts(db, started["job_id"]), calls_before
        finally:
            await db.close()

    try:
        result, texts, calls_before = asyncio.run(go())
        in_calls = embedder_seconds(metrics_port) - calls_before
    finally:
        stack.stop()
    settings = Settings(embedder=embedder)  # type: ignore[arg-type]
    raw = asyncio.run(raw_seconds(texts, settings))
    return {
        **result,
        "embedder": embedder,
        "distinct_texts": len(texts),
        "raw_embedder_s": round(raw, 1),
        "efficiency": round(raw / result["semantic_100_s"], 3),
        # Where the pipeline's time beyond the raw loop goes: the model waiting (not in a call:
        # before the first, between calls, after the last) and the calls themselves being slower
        # than the raw loop's (other stages and processes on the same cores, padding).
        "embedder_call_s": round(in_calls, 1),
        "model_busy_percent": round(100 * in_calls / (result["semantic_100_s"] * processes), 1),
        "model_waiting_s": round(result["semantic_100_s"] - in_calls / processes, 1),
        "calls_beyond_raw_s": round(in_calls - raw, 1),
        "worker_processes": processes,
        "worker_threads": threads,
        "stack": "cold" if cold else "warm",
    }
