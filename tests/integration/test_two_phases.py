"""Two phases, one job (issue 12): searchable by words before the vectors, and nothing lost between.

Real stack (server, ``dramatiq`` workers, RabbitMQ, PostgreSQL/pgvector) and the deterministic
embedding server over HTTP, steered through its ``/control`` endpoint: down, the text phase still
runs through the whole repository; slow, the workers are SIGKILLed between the phases.
"""

from __future__ import annotations

import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fixtures.fake_embedding_server import control, set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.conftest import StartStack
from tests.integration.stack import McpClient, Stack, finish, wait_for

#: Long enough that a job waiting for the embedder does not fail while a test looks at it.
BLOCKED_TIMEOUT = 600
MARKER = "quokkazebrafinch"


@pytest.fixture(scope="module")
def stack(start_stack: StartStack) -> Stack:
    return start_stack(
        env={"CODEBASE_MCP_BLOCKED_TIMEOUT_SECONDS": str(BLOCKED_TIMEOUT), "CODEBASE_MCP_BATCH_SIZE": "25"}
    )


@pytest.fixture
def embedder(fake_embedding_url: str) -> Iterator[str]:
    """The session's embedding server, put back to normal after the test whatever it did."""
    yield fake_embedding_url
    control(fake_embedding_url, {"fail": False, "delay_ms_per_text": 0.0})


def make_repo(prefix: str, files: int, seed: int) -> Path:
    repo = Path(tempfile.mkdtemp(prefix=prefix)) / "repo"
    generate_repo(repo, files, 30, seed=seed)
    # A word no generated file has, in a file of its own, planned with the others.
    (repo / "zz_marker.py").write_text(f"def {MARKER}_handler(value):\n    return value * 3\n")
    return repo


async def ledger(db: asyncpg.Pool, job_id: str) -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'searchable')::int AS searchable, "
        "count(*) FILTER (WHERE state = 'recorded')::int AS recorded, count(*)::int AS batches, "
        "coalesce(sum(chunks_created), 0)::int AS chunks, coalesce(sum(chunks_embedded), 0)::int AS embedded "
        "FROM index_batches WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    return dict(row)


async def stored(db: asyncpg.Pool, repo: Path) -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM files f WHERE f.repository_id = r.id)::int AS files, "
        "(SELECT count(DISTINCT f.path) FROM files f WHERE f.repository_id = r.id)::int AS paths, "
        "(SELECT count(*) FROM chunks c WHERE c.repository_id = r.id)::int AS chunks, "
        "(SELECT count(*) FROM chunks c WHERE c.repository_id = r.id AND c.embedding IS NOT NULL)::int AS vectors, "
        "(SELECT count(*) FROM (SELECT 1 FROM chunks c WHERE c.repository_id = r.id "
        "GROUP BY c.file_id, c.start_line, c.end_line HAVING count(*) > 1) d)::int AS duplicates "
        "FROM repositories r WHERE r.path = $1",
        str(repo),
    )
    return dict(row) if row is not None else {}


async def test_searchable_by_text_before_any_vector_exists(client: McpClient, db: asyncpg.Pool, embedder: str) -> None:
    repo = make_repo("cbm-two-text-", 150, seed=7)
    control(embedder, {"fail": True})  # the model is down: no vector can be made
    started = await client.call("start_indexing_background", repo_path=str(repo), name="twotext")
    job_id = started["job_id"]

    async def text_done() -> dict[str, Any] | None:
        status = await client.call("get_indexing_status", job_id=job_id)
        return status if status["searchable_percentage"] == 100 else None

    status = await wait_for(text_done, timeout=300, interval=0.5, what="the text phase to finish")
    assert status["status"] in ("running", "blocked"), status
    assert status["semantic_percentage"] == 0 and status["chunks_embedded"] == 0, status
    assert status["progress_percentage"] < 100
    now = await stored(db, repo)
    assert now["files"] == status["files_total"] == status["files_indexed"] and now["chunks"] > 0
    assert now["vectors"] == 0, "no vector can exist while the embedder is down"

    found = await client.call("search_code", query=f"{MARKER}_handler", repository="twotext", mode="text")
    assert [hit["file_path"] for hit in found["results"]][:1] == ["zz_marker.py"], found
    assert "twotext: semantic 0 %, text 100 %" in (found["message"] or ""), found["message"]
    # Hybrid falls back to words (the query cannot be embedded either) and still finds it.
    hybrid = await client.call("search_code", query=f"{MARKER} handler", repository="twotext")
    assert any(hit["file_path"] == "zz_marker.py" for hit in hybrid["results"]), hybrid

    control(embedder, {"fail": False})
    final = await finish(client, job_id, timeout=600)
    assert final["status"] == "completed", final
    assert final["searchable_percentage"] == final["semantic_percentage"] == 100
    after = await stored(db, repo)
    assert after["vectors"] == after["chunks"] == final["chunks_created"] == final["chunks_embedded"], (after, final)
    assert after["duplicates"] == 0
    done = await client.call("search_code", query=f"{MARKER} handler", repository="twotext", mode="vector")
    assert done["results"], done
    assert "index in progress" not in (done["message"] or "")


async def test_sigkill_between_the_phases_loses_and_duplicates_nothing(
    stack: Stack, client: McpClient, db: asyncpg.Pool, embedder: str
) -> None:
    repo = make_repo("cbm-two-kill-", 300, seed=8)
    set_embed_delay(embedder, 10.0)  # the vector phase lags far behind the text phase
    started = await client.call("start_indexing_background", repo_path=str(repo), name="twokill")
    job_id = started["job_id"]

    async def between() -> dict[str, int] | None:
        figures = await ledger(db, job_id)
        status = await client.call("get_indexing_status", job_id=job_id)
        halfway = 0 < figures["embedded"] < figures["chunks"]
        return figures if status["searchable_percentage"] == 100 and halfway else None

    before = await wait_for(between, timeout=300, interval=0.2, what="text done, vectors under way")
    stack.kill_workers(signal.SIGKILL)
    kept = await ledger(db, job_id)
    assert kept["searchable"] > 0, kept  # batches were waiting for their vectors when the workers died
    set_embed_delay(embedder, 0.0)
    stack.start_workers()
    final = await finish(client, job_id, timeout=600)
    assert final["status"] == "completed", final
    after = await stored(db, repo)
    assert after["files"] == after["paths"] == final["files_total"] == final["files_indexed"], (after, final)
    assert after["duplicates"] == 0, after
    assert after["vectors"] == after["chunks"] == final["chunks_created"] == final["chunks_embedded"], (after, final)
    figures = await ledger(db, job_id)
    assert figures["recorded"] == figures["batches"] and figures["embedded"] == figures["chunks"], figures
    # Each batch's text was stored once: the kill hit the vector phase only.
    writes = await db.fetchval("SELECT sum(write_runs)::int FROM index_batches WHERE job_id = $1", uuid.UUID(job_id))
    assert writes == figures["batches"], (writes, figures, before)
