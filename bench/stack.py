"""Boot code shared by the benchmarks: embedded PostgreSQL, RabbitMQ vhosts, the fake embedding server,
fresh databases, and the real process stack (``tests.integration.stack.Stack``).

Everything started here is stopped by the context manager that started it, by process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from models.settings import Settings
from tests.fixtures import fake_embedding_server
from tests.integration.stack import REPO_ROOT, Stack, free_port

ROOT = REPO_ROOT


@functools.cache
def ensure_rabbitmq() -> None:
    """Start RabbitMQ when it is not running: the project's idempotent script, as the test suite's
    session fixture runs it (a machine whose broker stopped would otherwise fail in rabbitmqctl)."""
    subprocess.run(["bash", str(ROOT / "rabbitmq" / "ensure-rabbitmq.sh")], check=True, timeout=600)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def new_vhost(prefix: str = "cbm-bench") -> str:
    """A fresh RabbitMQ vhost the ``guest`` user may use (RabbitMQ started first if it is down)."""
    ensure_rabbitmq()
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def drop_vhost(vhost: str) -> None:
    """Delete ``vhost`` and its queues; a failure (already gone, broker down) is not the bench's result."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True, timeout=120)


@dataclass
class BenchEnvironment:
    """One embedded PostgreSQL and a RabbitMQ vhost per :meth:`stack`, all under ``work``."""

    work: Path
    server_url: str  # postgresql://... of the embedded server (its default database)
    pg_data_dir: Path | None = None  # the embedded server's folder (its postmaster.pid: bench.process_cpu)
    vhosts: list[str] = field(default_factory=list)
    fake: subprocess.Popen[bytes] | None = None
    fake_url: str = ""

    def fresh_database(self) -> str:
        """A new empty database on the embedded server (so no embedding cache carries over)."""
        import asyncpg

        name = f"bench_{uuid.uuid4().hex[:10]}"

        async def create() -> None:
            conn = await asyncpg.connect(self.server_url.replace("+asyncpg", ""))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        base, _, _ = self.server_url.rpartition("/")
        return f"{base}/{name}"

    def fresh_vhost(self) -> str:
        vhost = new_vhost()
        self.vhosts.append(vhost)
        return f"amqp://guest:guest@127.0.0.1:5672/{vhost}?heartbeat=10&connection_attempts=5&retry_delay=1"

    def start_fake_embedder(self) -> str:
        """The tests' deterministic Ollama-compatible server (no delay unless set through :func:`control`)."""
        if self.fake is None:
            self.fake, self.fake_url = fake_embedding_server.spawn(
                "--dimension", "384", env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
        return self.fake_url

    def env(self, *, embedder: str, log_level: str | None = "WARNING", **extra: str) -> dict[str, str]:
        """Environment of one stack: a fresh database and vhost; ``embedder`` is ``local`` or ``fake``.

        None of this process's ``CODEBASE_MCP_*`` variables; ``log_level=None`` sets no level (the
        settings' default); ``extra`` are settings: ``max_concurrent_jobs="5"`` is
        ``CODEBASE_MCP_MAX_CONCURRENT_JOBS=5``.
        """
        env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
        env.update(
            {
                "CODEBASE_MCP_DATABASE_URL": self.fresh_database(),
                "CODEBASE_MCP_BROKER_URL": self.fresh_vhost(),
                "dramatiq_prom_db": tempfile.mkdtemp(prefix="prom-", dir=self.work),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if log_level is not None:
            env["CODEBASE_MCP_LOG_LEVEL"] = log_level
        if embedder == "fake":
            env.update(
                {
                    "CODEBASE_MCP_EMBEDDER": "ollama",
                    "CODEBASE_MCP_OLLAMA_URL": self.start_fake_embedder(),
                    "CODEBASE_MCP_OLLAMA_MODEL": "fake-deterministic",
                    "CODEBASE_MCP_OLLAMA_DIMENSION": "384",
                }
            )
        else:
            env["CODEBASE_MCP_EMBEDDER"] = embedder  # local or local-int8
            # local-int8 builds its graph under the data dir once: the one this process uses (and
            # the raw-embedder section built), so no job waits for a build.
            env["CODEBASE_MCP_DATA_DIR"] = str(Settings().data_dir)
        env.update({f"CODEBASE_MCP_{key.upper()}": value for key, value in extra.items()})
        return env

    def stack(self, env: dict[str, str], *, processes: int, threads: int) -> Stack:
        log_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=self.work))
        return Stack(env=env, log_dir=log_dir, worker_processes=processes, worker_threads=threads)


@contextlib.contextmanager
def bench_environment(keep: bool = False) -> Iterator[BenchEnvironment]:
    work = Path(tempfile.mkdtemp(prefix="cbm-bench-"))
    # Its own top-level temp dir: PostgreSQL runs as another user and must reach the folder.
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-bench-pg-"))
    bench = BenchEnvironment(
        work=work, server_url=ensure_embedded_postgres(data_dir, free_port()), pg_data_dir=data_dir
    )
    try:
        yield bench
    finally:
        if bench.fake is not None:
            bench.fake.terminate()
            bench.fake.wait(timeout=10)
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        for vhost in bench.vhosts:
            drop_vhost(vhost)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def spawn_workers(env: dict[str, str], log: Path, *, processes: int, threads: int) -> subprocess.Popen[bytes]:
    """``dramatiq actors.worker`` in its own process group (so one kill reaches its forks), logging to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "actors.worker", "--processes", str(processes), "--threads", str(threads)],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=open(log, "wb"),  # noqa: SIM115 (the process owns it)
        stderr=subprocess.STDOUT,
    )


def stop_workers(workers: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker group; SIGKILL it if an embed call in flight keeps it past a minute."""
    os.killpg(workers.pid, signal.SIGTERM)
    try:
        workers.wait(timeout=60)
    except subprocess.TimeoutExpired:  # nothing of the call in flight is needed any more
        os.killpg(workers.pid, signal.SIGKILL)
        workers.wait(timeout=30)


def sample_texts(repo: Path, settings: Settings, count: int) -> list[str]:
    """The texts the pipeline would embed for ``count`` chunks of ``repo`` (random files, seed 7)."""
    from actors.chunking import embedding_text
    from actors.pipeline import read_and_chunk

    files = sorted(str(path.relative_to(repo)) for path in repo.rglob("*.py"))
    random.Random(7).shuffle(files)
    payload = read_and_chunk(repo, [{"path": path} for path in files[:count]], settings)
    texts = [embedding_text(chunk.header, chunk.content) for chunk in payload.chunks]
    return texts[:count]


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_members(pgid: int) -> list[int]:
    """Live process ids of process group ``pgid`` (a stack's server or its dramatiq master + workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return sorted(members)


def embedder_seconds(metrics_port: int) -> float:
    """Seconds the workers spent inside embedder calls, from their Prometheus exporter (all processes)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("codebase_mcp_embedding_request_duration_seconds_sum")
    )
