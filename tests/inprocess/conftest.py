"""The in-process tier: real actors on Dramatiq's ``StubBroker`` and ``Worker``, the real test
PostgreSQL (a database of its own), the deterministic embedding server, and the MCP server through
the SDK's in-memory client. No RabbitMQ, no server or worker subprocesses, so a whole job takes
well under a second of pipeline work; what only a process boundary can show stays in
``tests/integration`` and ``tests/faults``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO

import actors.broker
from actors.broker import declare_actors, use_broker
from actors.resources import WorkerResources
from models.settings import Settings
from server.service import IndexingService
from tests.conftest import EMBEDDING_DIMENSION


@pytest.fixture(scope="session")
async def inprocess_database(make_database: Callable[[str], Awaitable[str]]) -> str:
    """A database of this tier's own on the session cluster: no other stack's upkeep sees its jobs."""
    return await make_database("inprocess")


@pytest.fixture(scope="session")
def repos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inprocess-repos")


@pytest.fixture(scope="session")
def settings(inprocess_database: str, fake_embedding_url: str, repos_root: Path) -> Settings:
    return Settings(
        database_url=inprocess_database,
        broker_url="amqp://guest:guest@127.0.0.1:5672/unused-by-the-stub-broker",
        embedder="ollama",
        ollama_url=fake_embedding_url,
        ollama_model="fake-deterministic",
        ollama_dimension=EMBEDDING_DIMENSION,
        embed_retry_base_seconds=0.05,
        embed_max_attempts=2,
        allowed_roots=[repos_root],
        batch_size=3,
        batches_in_flight=2,
    )


@pytest.fixture(scope="session")
def stub_broker(settings: Settings) -> Iterator[StubBroker]:
    """The worker's broker shape (AsyncIO, the worker resources) on a StubBroker, every actor declared."""
    previous = actors.broker._current
    broker = StubBroker()
    broker.add_middleware(AsyncIO())
    resources = WorkerResources(settings)
    broker.add_middleware(resources)
    declare_actors(broker)
    use_broker(broker, resources)
    broker.emit_after("process_boot")
    yield broker
    broker.close()
    actors.broker._current = previous
    if previous is not None:
        dramatiq.set_broker(previous[0])


@pytest.fixture(scope="session")
def stub_worker(stub_broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
async def service(settings: Settings, stub_worker: Worker) -> AsyncIterator[IndexingService]:
    async with IndexingService.open(settings) as opened:
        yield opened
