"""Real services for the test session: embedded PostgreSQL (pgvector), a RabbitMQ vhost, and an
Ollama-compatible embedding server with deterministic vectors. Nothing is mocked."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import hypothesis
import pytest

from tests.fixtures import fake_embedding_server
from tests.integration.stack import REPO_ROOT, private_cluster

EMBEDDING_DIMENSION = 384


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis runs the same examples on every run unless asked otherwise, so CI cannot flake.

    ``ci`` (the default): derandomized (examples derived from each test, not from a random seed)
    and no example database (nothing carried over between runs or machines). ``explore``
    (``HYPOTHESIS_PROFILE=explore``): random examples, to look for new failures by hand.
    """
    hypothesis.settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    hypothesis.settings.register_profile("explore", derandomize=False)
    hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh embedded PostgreSQL 18 + pgvector cluster for this session."""
    with private_cluster("cbm-test-pg-") as url:
        yield url


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def rabbitmq_ready() -> None:
    subprocess.run(["bash", str(REPO_ROOT / "rabbitmq" / "ensure-rabbitmq.sh")], check=True, timeout=600)


@pytest.fixture(scope="session")
def make_vhost(rabbitmq_ready: None) -> Iterator[object]:
    """Factory of isolated RabbitMQ vhosts (deleted at session end); returns a broker URL."""
    created: list[str] = []

    def make() -> str:
        vhost = f"cbm-test-{uuid.uuid4().hex[:12]}"
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        created.append(vhost)
        return f"amqp://guest:guest@127.0.0.1:5672/{vhost}?heartbeat=10&connection_attempts=5&retry_delay=1"

    yield make
    for vhost in created:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def broker_url(make_vhost: object) -> str:
    return make_vhost()  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
def fake_embedding_url() -> Iterator[str]:
    """The deterministic Ollama-compatible server, as a separate process (the real HTTP client talks to it)."""
    with fake_embedding_server.running("--dimension", str(EMBEDDING_DIMENSION)) as url:
        yield url


@pytest.fixture(scope="session")
def base_env(database_url: str, broker_url: str, fake_embedding_url: str) -> dict[str, str]:
    prom_dir = tempfile.mkdtemp(prefix="cbm-test-prom-")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
    env.update(
        {
            "CODEBASE_MCP_DATABASE_URL": database_url,
            "CODEBASE_MCP_BROKER_URL": broker_url,
            "CODEBASE_MCP_EMBEDDER": "ollama",
            "CODEBASE_MCP_OLLAMA_URL": fake_embedding_url,
            "CODEBASE_MCP_OLLAMA_MODEL": "fake-deterministic",
            "CODEBASE_MCP_OLLAMA_DIMENSION": str(EMBEDDING_DIMENSION),
            "CODEBASE_MCP_EMBED_RETRY_BASE_SECONDS": "0.2",
            "CODEBASE_MCP_LOG_LEVEL": "INFO",
            # The session's own log file, not the machine's default one under the data directory.
            "CODEBASE_MCP_LOG_FILE": os.path.join(tempfile.mkdtemp(prefix="cbm-test-log-"), "codebase-mcp.log"),
            # The suite starts its workers itself; tests of the server's own pool set "auto".
            "CODEBASE_MCP_WORKERS": "never",
            "dramatiq_prom_db": prom_dir,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def make_database(database_url: str) -> Callable[[str], Awaitable[str]]:
    """``await make_database(prefix)``: a new, empty database on the session cluster; returns its URL."""

    async def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return database_url.rsplit("/", 1)[0] + f"/{name}"

    return make


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A plain asyncpg pool on the session database, for checking what the pipeline stored."""
    pool = await asyncpg.create_pool(
        database_url.replace("postgresql+asyncpg://", "postgresql://"), min_size=1, max_size=4
    )
    yield pool
    await pool.close()
