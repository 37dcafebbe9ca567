"""Services the crash matrix may break on purpose: a private PostgreSQL and a private RabbitMQ node.

The session's PostgreSQL and the shared RabbitMQ node (127.0.0.1:5672) serve other test sessions
on this machine, so the faults never touch them: PostgreSQL restarts happen on a cluster of this
module's own, and the broker restart on a RabbitMQ node started here under its own name, ports
and data directory (stopped with ``rabbitmqctl -n <that node> stop``, never the shared node).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from tests.integration.stack import free_port


@dataclass
class Postgres:
    """An embedded PostgreSQL cluster that a test may stop and start again."""

    data_dir: Path
    port: int
    url: str

    @property
    def dsn(self) -> str:
        return self.url.replace("postgresql+asyncpg://", "postgresql://")

    def stop(self) -> None:
        stop_embedded_postgres(self.data_dir)

    def start(self) -> None:
        ensure_embedded_postgres(self.data_dir, self.port)


@pytest.fixture(scope="session")
def faults_pg() -> Iterator[Postgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-faults-pg-"))
    port = free_port()
    url = ensure_embedded_postgres(data_dir, port)
    yield Postgres(data_dir, port, url)
    stop_embedded_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


class Db:
    """Checks against a database that may be restarting: every query retries until it answers."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def _run(self, method: str, sql: str, *args: Any, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
                async with self._pool.acquire() as conn:
                    return await getattr(conn, method)(sql, *args)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError):
                if self._pool is not None:
                    self._pool.terminate()
                    self._pool = None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record:
        return await self._run("fetchrow", sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchval", sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self._run("fetch", sql, *args))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


@pytest.fixture(scope="session")
async def faults_db(faults_pg: Postgres) -> AsyncIterator[Db]:
    checker = Db(faults_pg.dsn)
    yield checker
    await checker.close()


@dataclass
class RabbitNode:
    """A RabbitMQ node of our own: its name, AMQP and distribution ports, data and log folders."""

    name: str
    port: int
    dist_port: int
    base: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F?heartbeat=60&connection_attempts=5&retry_delay=2"

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            {
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                # Our own file: the system one pins the shared node's listener (5672).
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(self.base / "pid"),
            }
        )
        return env

    def _ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 180.0) -> float:
        """Start the node and wait until it accepts AMQP connections; returns the seconds it took."""
        began = time.monotonic()
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), check=True, capture_output=True, timeout=60)
        while time.monotonic() - began < timeout:
            if self._ctl("await_startup", "--timeout", "30", timeout=60).returncode == 0:
                return time.monotonic() - began
            time.sleep(1)
        raise TimeoutError(f"private RabbitMQ node {self.name} did not start; see {self.base / 'log'}")

    def stop(self) -> None:
        result = self._ctl("stop")
        if result.returncode != 0:
            raise RuntimeError(f"could not stop {self.name}: {result.stderr.strip()}")


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[RabbitNode]:
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="cbm-faults-rabbitmq-"))
    node = RabbitNode(f"cbmfaults{os.getpid()}@localhost", free_port(), free_port(), base)
    (base / "mnesia").mkdir()
    (base / "log").mkdir()
    (base / "enabled_plugins").write_text("", encoding="utf-8")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {node.port}\nloopback_users.guest = true\nconsumer_timeout = 3600000\n",
        encoding="utf-8",
    )
    # The packaged launcher drops to the rabbitmq user when started as root.
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=False)
    base.chmod(0o755)
    node.start()
    yield node
    node._ctl("stop")
    shutil.rmtree(base, ignore_errors=True)
