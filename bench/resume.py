"""Resume after SIGKILL of server and workers (the quickstart's scenario 4), run many times, with
where the seconds go.

Each run: a fresh database and vhost, a generated repository of ``--files`` files (its own seed, so
nothing is in the embedding cache), the stack of the integration tests (``serve --transport http``
and ``dramatiq actors.worker``, 2 processes x 4 threads, the deterministic embedding server at 2 ms
per text). Once the job passes 30 %, the server and the workers are SIGKILLed, 2 s later both are
started again (workers first, as the test does) and the clock runs from that restart:

- ``server``: ``/readyz`` answers 200;
- ``workers``: the last Dramatiq worker process logs "ready for action";
- ``claim``: a ledger row of the job is claimed or moved after the restart (the database's clock);
- ``recorded``: a batch is recorded after the restart;
- ``resume``: ``get_indexing_status`` says ``running`` with ``batches_done`` above the figure
  before the kill (the quickstart test's measure, ``test_restart_recovery``).

    python -m bench.resume --runs 10 --files 800 [--preload-workers]

``--preload-workers`` starts the workers with ``python -m actors.worker`` (Dramatiq's CLI with the
worker modules imported before the fork, as the local pools start them) instead of the operator's
``dramatiq actors.worker``.

Prints one line per run and min / median / p95 / max of each column.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import statistics
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from bench.stack import BenchEnvironment, bench_environment
from tests.fixtures.fake_embedding_server import set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, Stack

STAMP = r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]? "
READY_LINE = re.compile(STAMP + r".*ready for action", re.MULTILINE)
#: Log lines that mark the server's start: its first line (imports and settings done), resume done.
SERVER_LINES = {
    "server_imported": re.compile(STAMP + r".*log file: ", re.MULTILINE),
    "server_resumed": re.compile(STAMP + r".*resumed \d+ running job", re.MULTILINE),
}
RESOURCES_LINE = re.compile(STAMP + r".*worker resources ready", re.MULTILINE)
COLUMNS = (
    "server_imported",
    "server_resumed",
    "listening",
    "workers",
    "resources",
    "claim",
    "recorded",
    "resume",
    "ready",
    "readyz_max",
    "test_resume",
)


@dataclass
class Run:
    killed_at_pct: int
    figures: dict[str, float]


def _stamps(log: Path, line: re.Pattern[str]) -> list[float]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in line.findall(text)]


async def one_run(bench: BenchEnvironment, files: int, seed: int, delay_ms: float, preload: bool = False) -> Run:
    repo = bench.work / f"repo-{seed}"
    generate_repo(repo, files, 60, seed=seed)
    # WORKERS=never as in the tests' stacks: only the worker group below works (no pool of serve's).
    log_file = str(bench.work / f"server-{seed}.log")
    env = await asyncio.to_thread(bench.env, embedder="fake", log_level="INFO", workers="never", log_file=log_file)
    fake_url = bench.start_fake_embedder()
    set_embed_delay(fake_url, delay_ms)
    stack = bench.stack(env, processes=2, threads=4)
    stack.preload_workers = preload
    db = await asyncpg.connect(env["CODEBASE_MCP_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        stack.start_workers()
        stack.start_server()
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo), name="resume")
            job_id = started["job_id"]
            while True:
                before = await client.call("get_indexing_status", job_id=job_id)
                if before["progress_percentage"] >= 30:
                    break
                await asyncio.sleep(0.2)
        stack.kill_server(signal.SIGKILL)
        stack.kill_workers(signal.SIGKILL)
        # Batches may be recorded between the last status read and the kill: count them now.
        done_at_kill = await db.fetchval(
            "SELECT count(*) FROM index_batches WHERE job_id = $1 AND state = 'recorded'", uuid.UUID(job_id)
        )
        await asyncio.sleep(2)
        restart_wall = time.time()
        restart = time.monotonic()
        restart_db = await db.fetchval("SELECT now()")
        stack.start_workers()
        worker_log = stack.log_dir / f"workers-{stack._restarts}.log"
        # The server as Stack.start_server starts it, without its wait for /readyz: the probes below
        # time /healthz (listening), /readyz (ready) and the status a client sees, each on its own.
        stack.server = stack._spawn(
            "server",
            [
                str(BIN / "codebase-mcp"),
                "serve",
                "--transport",
                "http",
                "--host",
                stack.host,
                "--port",
                str(stack.port),
            ],
        )
        figures: dict[str, float] = {}
        job = uuid.UUID(job_id)
        base = f"http://{stack.host}:{stack.port}"
        readyz_calls: list[float] = []
        ready_probe = asyncio.ensure_future(_until_ready(base, restart, readyz_calls))
        while "listening" not in figures:
            await _watch_ledger(db, job, restart_db, restart, figures)
            if await asyncio.to_thread(_answers, f"{base}/healthz", 0.5):
                figures["listening"] = time.monotonic() - restart
            _deadline(restart, figures, stack)
            await asyncio.sleep(0.05)
        async with stack.client() as client:
            while "resume" not in figures or "recorded" not in figures or not ready_probe.done():
                await _watch_ledger(db, job, restart_db, restart, figures)
                if "resume" not in figures:
                    status = await client.call("get_indexing_status", job_id=job_id)
                    moved = status["batches_done"] > done_at_kill or status["status"] == "completed"
                    if status["status"] in ("running", "completed") and moved:
                        figures["resume"] = time.monotonic() - restart
                _deadline(restart, figures, stack)
                await asyncio.sleep(0.05)
        figures["ready"] = await ready_probe
        figures["readyz_max"] = max(readyz_calls)
        # What test_restart_recovery measures: it waits for /readyz, then polls the status.
        figures["test_resume"] = max(figures["ready"], figures["resume"])
        ready = _stamps(worker_log, READY_LINE)
        figures["workers"] = (max(ready) - restart_wall) if len(ready) >= stack.worker_processes else float("nan")
        opened = _stamps(worker_log, RESOURCES_LINE)
        figures["resources"] = (min(opened) - restart_wall) if opened else float("nan")
        for name, line in SERVER_LINES.items():
            after = [stamp for stamp in _stamps(Path(log_file), line) if stamp >= restart_wall]
            figures[name] = (min(after) - restart_wall) if after else float("nan")
        return Run(before["progress_percentage"], figures)
    finally:
        await db.close()
        stack.stop()


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError):
        return False


async def _until_ready(base: str, restart: float, durations: list[float]) -> float:
    """Seconds from the restart to the first /readyz 200, asking with a long timeout (each call's
    duration is kept: a harness or orchestrator with a 1 s timeout gives up on slower answers)."""
    while True:
        began = time.monotonic()
        ready = await asyncio.to_thread(_answers, f"{base}/readyz", 30.0)
        durations.append(time.monotonic() - began)
        if ready:
            return time.monotonic() - restart
        await asyncio.sleep(0.05)


def _deadline(restart: float, figures: dict[str, float], stack: Stack) -> None:
    if time.monotonic() - restart > 120:
        raise RuntimeError(f"no resume 120 s after the restart: {figures}; see {stack.log_dir}")


async def _watch_ledger(
    db: asyncpg.Connection, job: uuid.UUID, restart_db: datetime, restart: float, figures: dict[str, float]
) -> None:
    """Note when a batch of the job is first claimed or moved, and first recorded, after the restart."""
    claimed, recorded = await db.fetchrow(
        "SELECT bool_or(updated_at > $2), bool_or(recorded_at > $2) FROM index_batches WHERE job_id = $1",
        job,
        restart_db,
    )
    now = time.monotonic() - restart
    if claimed and "claim" not in figures:
        figures["claim"] = now
    if recorded and "recorded" not in figures:
        figures["recorded"] = now


def _summary(values: list[float]) -> str:
    ordered = sorted(value for value in values if value == value)
    if not ordered:
        return "-"
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank: of 10 runs, the highest
    return f"{ordered[0]:.2f} / {statistics.median(ordered):.2f} / {p95:.2f} / {ordered[-1]:.2f}"


async def main_async(args: argparse.Namespace) -> int:
    runs: list[Run] = []
    with bench_environment(keep=args.keep) as bench:
        for index in range(args.runs):
            run = await one_run(
                bench, args.files, seed=1000 + index, delay_ms=args.delay_ms, preload=args.preload_workers
            )
            runs.append(run)
            shown = " ".join(f"{name} {run.figures.get(name, float('nan')):.2f}" for name in COLUMNS)
            print(f"run {index + 1:2d}: killed at {run.killed_at_pct:3d} %  {shown}", flush=True)
        if args.keep:
            print(f"logs under {bench.work}")
    launcher = "python -m actors.worker (imports before the fork)" if args.preload_workers else "dramatiq actors.worker"
    print(
        f"\n{len(runs)} runs, {args.files} files, workers: {launcher};"
        " seconds after the restart, min / median / p95 / max:"
    )
    for name in COLUMNS:
        print(f"  {name:15s} {_summary([run.figures.get(name, float('nan')) for run in runs])}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--files", type=int, default=800)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="embedding server delay per text")
    parser.add_argument("--keep", action="store_true", help="keep the logs (their folder is printed)")
    parser.add_argument(
        "--preload-workers",
        action="store_true",
        help="start the workers with python -m actors.worker (modules imported before the fork) "
        "instead of the operator's dramatiq actors.worker",
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
