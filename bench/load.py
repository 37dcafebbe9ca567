"""Load: jobs running while many clients poll their status, on the real stack.

    python -m bench.load                      # 3 jobs, 20 clients every 100 ms for 60 s

Boots an embedded PostgreSQL, a RabbitMQ vhost, the deterministic embedding server
(``tests/fixtures/fake_embedding_server.py``, with a per-text delay so the jobs outlast the
measurement), the real ``codebase-mcp serve --transport http`` and ``dramatiq`` workers. Starts
``--jobs`` indexing jobs, measures one client alone for ``--baseline-seconds``, then ``--clients``
MCP sessions each call ``get_indexing_status`` (on the jobs in turn), sleeping ``--interval``
between calls, for ``--duration`` seconds.

Prints and writes to ``bench/results/load.json``: status latency p50/p95/p99/max, calls and
errors, the jobs' progress during the window, PostgreSQL connections (peak, against
``max_connections``; pool exhaustion would show as errors or as ~30 s latencies, the pool timeout),
the RSS of the server and of every worker process (start, half time, peak, end), sampled every
second, and the CPU each used during the window (with the machine's, which others share).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.stack import ROOT, bench_environment
from tests.fixtures.fake_embedding_server import control
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient, Stack, ToolCallError


def family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (Dramatiq forks its worker processes)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class RssSampler:
    """RSS in MiB of every process of the server and the workers, once per ``interval``."""

    def __init__(self, roots: dict[str, int], interval: float = 1.0) -> None:
        self.roots = roots
        self.interval = interval
        self.samples: dict[str, list[float]] = {}
        self.cpu_seconds: dict[str, float] = {}

    def sample(self) -> None:
        for role, pid in self.roots.items():
            for index, process in enumerate(family(pid)):
                try:
                    rss = process.memory_info().rss / 2**20
                    cpu = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                label = role if index == 0 else f"{role}-child-{process.pid}"
                self.samples.setdefault(label, []).append(rss)
                self.cpu_seconds[label] = cpu.user + cpu.system

    def cpu_mark(self) -> dict[str, float]:
        """CPU seconds used so far by each process; the difference of two marks is a window's use."""
        self.sample()
        return dict(self.cpu_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
        self.sample()

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            label: {
                "start_mib": round(values[0], 1),
                "half_time_mib": round(values[len(values) // 2], 1),
                "peak_mib": round(max(values), 1),
                "end_mib": round(values[-1], 1),
                "samples": len(values),
            }
            for label, values in sorted(self.samples.items())
        }


async def poll(
    client: McpClient, job_ids: list[str], offset: int, interval: float, until: float, out: dict[str, Any]
) -> None:
    turn = offset
    while time.monotonic() < until:
        job_id = job_ids[turn % len(job_ids)]
        turn += 1
        start = time.perf_counter()
        try:
            await client.call("get_indexing_status", job_id=job_id)
            out["latencies"].append(time.perf_counter() - start)
        except (ToolCallError, Exception) as error:  # every failure is counted, none stops the run
            out["errors"].append(f"{type(error).__name__}: {error}"[:300])
        await asyncio.sleep(interval)


async def connections(url: str, stop: asyncio.Event, out: list[int]) -> int:
    """Sample the number of connections to the database every second; returns max_connections."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        while not stop.is_set():
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            out.append(int(await conn.fetchval(query)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        return limit
    finally:
        await conn.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(stack: Stack, repos: list[Path], args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    sampler = RssSampler({"server": stack.server.pid, "workers": stack.workers.pid})  # type: ignore[union-attr]
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    connection_samples: list[int] = []
    counting = asyncio.create_task(connections(database_url, stop, connection_samples))
    async with stack.client() as admin:
        job_ids = []
        for repo in repos:
            started = await admin.call("start_indexing_background", repo_path=str(repo), name=repo.name)
            job_ids.append(started["job_id"])
        await asyncio.sleep(args.warmup)
        # The same calls from one client first: on a shared machine only the ratio means much.
        alone: dict[str, Any] = {"latencies": [], "errors": []}
        await poll(admin, job_ids, 0, args.interval, time.monotonic() + args.baseline_seconds, alone)
        before = [await admin.call("get_indexing_status", job_id=job_id) for job_id in job_ids]
        results: dict[str, Any] = {"latencies": [], "errors": []}
        until = time.monotonic() + args.duration
        begin = time.monotonic()
        cpu_before = sampler.cpu_mark()
        own_before = psutil.Process().cpu_times()
        load_before = psutil.cpu_times()

        async def one_client(index: int) -> None:
            async with stack.client() as client:
                await poll(client, job_ids, index, args.interval, until, results)

        await asyncio.gather(*(one_client(index) for index in range(args.clients)))
        window = time.monotonic() - begin
        cpu_after = sampler.cpu_mark()
        own_after = psutil.Process().cpu_times()
        load_after = psutil.cpu_times()
        machine_busy = sum(load_after) - sum(load_before) - (load_after.idle - load_before.idle)
        cpu_share = {
            label: round(100 * (cpu_after[label] - cpu_before.get(label, 0.0)) / window, 1) for label in cpu_after
        }
        cpu_share["bench clients"] = round(
            100 * ((own_after.user + own_after.system) - (own_before.user + own_before.system)) / window, 1
        )
        cpu_share["machine (all processes, all cores)"] = round(100 * machine_busy / window, 1)
        after = [await admin.call("get_indexing_status", job_id=job_id) for job_id in job_ids]
        for job_id in job_ids:
            status = await admin.call("get_indexing_status", job_id=job_id)
            if status["status"] in ("pending", "running"):
                await admin.call("cancel_indexing_background", job_id=job_id)
    stop.set()
    await sampling
    max_connections = await counting
    latencies_ms = [seconds * 1000 for seconds in results["latencies"]]
    log_text = "\n".join(path.read_text(errors="replace") for path in stack.log_dir.iterdir())
    return {
        "clients": args.clients,
        "interval_ms": args.interval * 1000,
        "window_seconds": round(window, 1),
        "status_calls": len(latencies_ms),
        "errors": len(results["errors"]),
        "error_examples": sorted(set(results["errors"]))[:5],
        "calls_per_second": round(len(latencies_ms) / window, 1),
        "one_client_status_ms": {
            "calls": len(alone["latencies"]),
            "errors": len(alone["errors"]),
            "p50": round(1000 * statistics.median(alone["latencies"]), 1),
            "p95": round(1000 * percentile(alone["latencies"], 0.95), 1),
        },
        "status_ms": {
            "p50": round(statistics.median(latencies_ms), 1),
            "p95": round(percentile(latencies_ms, 0.95), 1),
            "p99": round(percentile(latencies_ms, 0.99), 1),
            "max": round(max(latencies_ms), 1),
        },
        "jobs": [
            {
                "status_before": b["status"],
                "status_after": a["status"],
                "progress_before": b["progress_percentage"],
                "progress_after": a["progress_percentage"],
                "files_indexed_during_window": a["files_indexed"] - b["files_indexed"],
            }
            for b, a in zip(before, after, strict=True)
        ],
        "db_connections": {"peak": max(connection_samples), "max_connections": max_connections},
        "pool_timeouts_in_logs": log_text.count("QueuePool limit"),
        "rss": sampler.summary(),
        "cpu_percent_of_one_core_during_window": cpu_share,
        "cores": psutil.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between one client's calls")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds between starting the jobs and polling")
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="one client alone, before the load")
    parser.add_argument("--files", type=int, default=1500, help="files per job's repository")
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="embedding server delay per text")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()

    # keep: the logs (and the generated repositories) stay for a look afterwards.
    with bench_environment(keep=True) as bench:
        control(bench.start_fake_embedder(), {"delay_ms_per_text": args.delay_ms})
        env = bench.env(embedder="fake", log_level=None, max_concurrent_jobs=str(args.jobs))
        stack = bench.stack(env, processes=args.processes, threads=args.threads)
        try:
            repos = []
            for index in range(args.jobs):
                repo = bench.work / f"repo-{index}"
                generate_repo(repo, args.files, args.lines, seed=100 + index)
                repos.append(repo)
            stack.start_workers()
            stack.start_server()
            result = asyncio.run(measure(stack, repos, args, env["CODEBASE_MCP_DATABASE_URL"]))
            result.update({"files_per_job": args.files, "delay_ms_per_text": args.delay_ms, "jobs_count": args.jobs})
            print(json.dumps(result, indent=2))
            out: Path = args.out
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(f"written to {out}; logs in {stack.log_dir}", file=sys.stderr)
            return 0 if result["errors"] == 0 else 1
        finally:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
