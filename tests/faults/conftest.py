"""Services the crash matrix may break on purpose: a private PostgreSQL and a private RabbitMQ node.

The session's PostgreSQL and the shared RabbitMQ node (127.0.0.1:5672) serve other test sessions
on this machine, so the faults never touch them: PostgreSQL restarts happen on a cluster of this
module's own, and the broker restart on a RabbitMQ node started here under its own name, ports
and data directory (stopped with ``rabbitmqctl -n <that node> stop``, never the shared node).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from tests.fixtures.rabbitmq_node import RabbitNode, make_private_node
from tests.integration.stack import free_port

__all__ = ["Db", "Postgres", "RabbitNode"]


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


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[RabbitNode]:
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed")
    node = make_private_node("cbmfaults", free_port(), free_port())
    node.start()
    yield node
    node._ctl("stop")
    shutil.rmtree(node.base, ignore_errors=True)
