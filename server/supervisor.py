"""The local worker pool of ``codebase-mcp serve``: started when no worker is attached, one per machine.

An assistant starts the server over stdio and nothing else, so the server has to run the pipeline
it publishes to. Every server on the machine runs a :class:`WorkerPool`; only the one holding the
*lease* starts workers, the others see them attached and wait. The lease is an ``flock`` on a file
under the data directory, chosen over a PostgreSQL advisory lock because the kernel drops it the
instant its holder dies (SIGKILL included) without a database connection to keep alive or to lose
on a database restart, and it works the same with the embedded and an external PostgreSQL. The
file's name carries the broker vhost and database it serves, so unrelated deployments that share
a data directory never wait on each other.

Workers die with their owner: a small guard process (``python -m server.supervisor guard``)
runs Dramatiq and stops it once its parent, the server, is gone, even SIGKILLed, so no orphan
pool keeps the queues busy while nothing restarts it. Their unacknowledged messages go back to
RabbitMQ and the next owner's workers finish the jobs (the ledger makes a redelivered batch a no-op).
The guard polls its parent instead of using ``PR_SET_PDEATHSIG``: that signal comes once per exiting
thread of a multi-threaded parent, and a second SIGTERM makes Dramatiq's worker process leave its
main thread while its consumer threads go on failing every message (seen here).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from models.settings import Settings

logger = logging.getLogger(__name__)

WorkersMode = Literal["auto", "always", "never"]

#: How often a pool checks its lease, its workers and (auto) the workers attached.
POLL_SECONDS = 1.0
#: Restart backoff after a crash: doubles from the first value up to the cap.
RESTART_BACKOFF_SECONDS = (1.0, 30.0)
#: A pool that ran this long before dying counts as healthy: the backoff starts over.
HEALTHY_RUN_SECONDS = 60.0
#: What a stopping pool gets to finish its current messages before it is killed (they are redelivered).
STOP_TIMEOUT_SECONDS = 10.0
#: The queue whose consumers tell whether a worker pool is attached (every ``dramatiq actors.worker`` consumes it).
PROBE_QUEUE = "index.embed"
#: The module Dramatiq's CLI loads in every worker process (the workers' entry point).
WORKER_MODULE = "actors.worker"
#: The command a user runs to attach workers by hand, named in messages.
WORKER_COMMAND = f"dramatiq {WORKER_MODULE}"
#: How often the guard checks that its server is still alive.
GUARD_POLL_SECONDS = 0.2


def spawn_workers(
    processes: int,
    threads: int,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    guarded: bool = False,
) -> subprocess.Popen[bytes]:
    """``dramatiq WORKER_MODULE`` with ``processes`` × ``threads``, its output appended to ``log_path``.

    The one launcher of local workers: the CLI's ``index`` and the server's pool both use it. It
    runs Dramatiq's CLI through ``python -m actors.worker``, whose main process imports the worker
    modules once before it forks (each worker process would otherwise import them itself).
    ``guarded`` runs it under :func:`guard`, which stops it when this process dies.
    """
    base = dict(os.environ if env is None else env)
    command = [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        # Dramatiq's default waits 10 minutes for running actors; what they leave is redelivered.
        "--worker-shutdown-timeout",
        str(int(STOP_TIMEOUT_SECONDS * 1000)),
    ]
    if guarded:
        command = [sys.executable, "-m", "server.supervisor", "guard", str(os.getpid()), "--", *command]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            env={
                **base,
                "dramatiq_queue_prefetch": str(threads),
                # A fresh metrics directory per start: Dramatiq never empties it, old counters would add in.
                "dramatiq_prom_db": base.get("dramatiq_prom_db")  # noqa: SIM112 (Dramatiq's name)
                or tempfile.mkdtemp(prefix="codebase-mcp-worker-metrics-"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,  # never the MCP client's stdio stream
            # Its own process group: a signal to it reaches Dramatiq's forked workers, and Ctrl-C in
            # a terminal reaches only the command, which then stops them itself.
            start_new_session=True,
        )


def _kill_rest_of_group() -> None:
    """SIGKILL every other process of this process group (Linux ``/proc``): what Dramatiq left behind."""
    group, me = os.getpgid(0), os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the parenthesised command name: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                os.kill(int(entry.name), signal.SIGKILL)


def guard(parent: int, command: list[str]) -> int:
    """Run ``command`` until it exits, this process is told to stop, or ``parent`` is gone.

    Dramatiq gets exactly one SIGTERM (a second one makes its worker process exit half-way), then
    ``STOP_TIMEOUT_SECONDS`` to finish; whatever is left of the group is killed.
    """
    child = subprocess.Popen(command)  # same process group: _kill_rest_of_group reaches its workers
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    while child.poll() is None and not stopping and os.getppid() == parent:
        time.sleep(GUARD_POLL_SECONDS)
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_TIMEOUT_SECONDS + 2)
    _kill_rest_of_group()
    child.wait()
    return child.returncode


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS + 5) -> None:
    """SIGTERM the group's leader only (Dramatiq forwards it), SIGKILL the group if it outlives ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def attached_workers(broker_url: str) -> int | None:
    """Consumers on the probe queue; ``None`` when RabbitMQ cannot be asked."""
    from server.metrics import queue_stats

    try:
        return queue_stats(broker_url, [PROBE_QUEUE]).get(PROBE_QUEUE, (0, 0))[1]
    except Exception:  # any failure means "cannot tell"; the caller waits and asks again
        return None


def pool_key(settings: Settings) -> str:
    """What one pool serves: the broker vhost and the database (credentials left out)."""
    broker = urlsplit(settings.broker_url)
    database = settings.database_url
    if database:
        parts = urlsplit(database)
        database = f"{parts.hostname}:{parts.port}{parts.path}"
    else:
        database = f"embedded:{settings.data_dir.resolve()}:{settings.embedded_pg_port}"
    served = f"{broker.hostname}:{broker.port or 5672}{broker.path or '/'}|{database}"
    return hashlib.sha256(served.encode()).hexdigest()[:16]


class Lease:
    """An exclusive, non-blocking ``flock`` on one file; the kernel releases it when its holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")  # opened close-on-exec: worker processes never inherit the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # for people: which server owns the pool
        handle.flush()
        self._file = handle
        return True

    def owner_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().split()[0])
        return None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def pool_threads(settings: Settings) -> int:
    """Threads per worker process: ``WORKER_THREADS``, and always two more than the embed queue may
    hold (``EMBED_CONCURRENCY``, see :class:`actors.broker.PipelineBroker`), so chunking, writing
    and recording always have threads while the model works."""
    return max(settings.worker_threads, settings.embed_concurrency + 2)


class WorkerPool:
    """Keeps one local ``dramatiq actors.worker`` pool alive while this server owns the lease.

    ``auto`` starts it only when no worker is attached (workers run with the dramatiq CLI are
    used as they are); ``always`` starts it regardless; ``never`` never does.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        attached: Callable[[str], int | None] = attached_workers,
    ) -> None:
        self.settings = settings
        self.mode: WorkersMode = settings.workers
        key = pool_key(settings)
        self.lease = Lease(settings.data_dir / f"workers-{key}.lock")
        self.log_path = settings.data_dir / "logs" / f"workers-{key}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._attached = attached
        self._started_at = 0.0
        self._next_start = 0.0
        self._failures = 0

    async def run(self) -> None:
        """Supervise until cancelled; never raises (a failed round is logged and retried)."""
        if self.mode == "never":
            return
        while True:
            try:
                await self._round()
            except Exception:  # supervision must outlive a broker blip or a full disk
                logger.exception("worker pool supervision round failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _round(self) -> None:
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return
            self._crashed(code)
        if not self.lease.try_acquire():
            return
        if time.monotonic() < self._next_start:
            return
        if self.mode == "auto" and self.starts == 0:
            attached = await asyncio.to_thread(self._attached, self.settings.broker_url)
            if attached is None or attached > 0:
                # Unreachable broker: workers could not connect either. Attached: someone else's
                # workers (the dramatiq CLI, or the previous owner's pool finishing its messages).
                return
        self._start()

    def _start(self) -> None:
        self.process = spawn_workers(
            self.settings.worker_processes, pool_threads(self.settings), self.log_path, guarded=True
        )
        self.starts += 1
        self._started_at = time.monotonic()
        logger.info(
            "started local workers (pid %d, %d process(es) × %d threads; log: %s)",
            self.process.pid,
            self.settings.worker_processes,
            pool_threads(self.settings),
            self.log_path,
        )

    def _crashed(self, code: int) -> None:
        ran = time.monotonic() - self._started_at
        self._failures = 0 if ran >= HEALTHY_RUN_SECONDS else self._failures + 1
        first, cap = RESTART_BACKOFF_SECONDS
        delay = min(cap, first * 2 ** max(self._failures - 1, 0))
        self._next_start = time.monotonic() + delay
        logger.warning(
            "local workers exited with %s after %.0fs; restarting in %.0fs (log: %s)", code, ran, delay, self.log_path
        )
        self.process = None

    async def stop(self) -> None:
        if self.process is not None:
            logger.info("stopping local workers (pid %d)", self.process.pid)
            await asyncio.to_thread(stop_process_group, self.process)
            self.process = None
        self.lease.release()


@asynccontextmanager
async def background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``work`` as a task for as long as the block lasts; cancel it, and wait for it, on the way out."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def supervised_workers(settings: Settings) -> AsyncIterator[WorkerPool]:
    """Run a :class:`WorkerPool` for as long as the block lasts; stop its workers on the way out."""
    pool = WorkerPool(settings)
    try:
        async with background(pool.run(), "worker-pool"):
            yield pool
    finally:
        await pool.stop()


class WorkerNote:
    """The status-message suffix for a job no worker will ever pick up (``WORKERS=never``, none attached)."""

    CACHE_SECONDS = 2.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._checked = -float("inf")
        self._note: str | None = None

    async def get(self) -> str | None:
        if self.settings.workers != "never":
            return None  # auto/always: this server (or the pool's owner) starts workers itself
        if time.monotonic() - self._checked > self.CACHE_SECONDS:
            attached = await asyncio.to_thread(attached_workers, self.settings.broker_url)
            self._checked = time.monotonic()
            self._note = (
                None
                if attached
                else f"no worker is attached to RabbitMQ and CODEBASE_MCP_WORKERS=never: start one with "
                f"`{WORKER_COMMAND}` (in the project's environment, with the server's CODEBASE_MCP_* settings), "
                "or set CODEBASE_MCP_WORKERS=auto to let the server start them"
            )
        return self._note


def main(argv: list[str]) -> int:
    """``python -m server.supervisor guard PARENT_PID -- COMMAND...`` (started by :func:`spawn_workers`)."""
    if len(argv) < 4 or argv[0] != "guard" or argv[2] != "--":
        print("usage: python -m server.supervisor guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    return guard(int(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
