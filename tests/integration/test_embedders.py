"""Any embedder per repository in one database (issue 11 item 5, issue 16's silent mixing).

Real processes throughout: an embedded PostgreSQL of this module's own, one Ollama-compatible fake
server answering ``fake-384`` with 384-dimensional and ``fake-768`` with 768-dimensional vectors
(as one Ollama serves several models), and two stacks (server + workers) configured with one model
each, on separate RabbitMQ vhosts, sharing the database.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from alembic import command
from pgvector.asyncpg import register_vector
from sqlalchemy.ext.asyncio import create_async_engine

from models.database import create_engine
from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from models.migrate import alembic_config, upgrade_to_head
from server.search import Filters, VectorQuery, run_search
from tests.fixtures import fake_embedding_server
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient, Stack, free_port, private_cluster

TERMINAL = ("completed", "failed", "cancelled")
RETRY_GO = """package net

// RetryWithBackoff calls fn until it succeeds, doubling the delay between attempts.
func RetryWithBackoff(fn func() error, attempts int) error {
    return nil
}
"""
PARSER_RS = """/// Split one CSV line into its fields, honouring quotes.
pub fn split_csv_fields(line: &str) -> Vec<String> {
    line.split(',').map(|s| s.to_string()).collect()
}
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with private_cluster("cbm-test-embedders-pg-") as url:
        yield url


@pytest.fixture(scope="module")
def fake_models() -> Iterator[str]:
    with fake_embedding_server.running("--dimension", "384", "--model-dimension", "fake-768=768") as url:
        yield url


@pytest.fixture(scope="module")
def start_stack(start_stack: Callable[..., Stack], database: str, fake_models: str) -> Callable[..., Stack]:
    """``start_stack(model, dimension, workers=True, **env)``: the shared factory, on this module's
    database and fake models, with one worker process per stack."""

    def start(model: str, dimension: int, *, workers: bool = True, **env: str) -> Stack:
        model_env = {
            "CODEBASE_MCP_DATABASE_URL": database,
            "CODEBASE_MCP_OLLAMA_URL": fake_models,
            "CODEBASE_MCP_OLLAMA_MODEL": model,
            "CODEBASE_MCP_OLLAMA_DIMENSION": str(dimension),
        }
        return start_stack(env={**model_env, **env}, workers=workers, worker_processes=1)

    return start


@pytest.fixture(scope="module")
async def db(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database.replace("postgresql+asyncpg://", "postgresql://"), min_size=1, max_size=2)
    yield pool
    await pool.close()


async def finish(client: McpClient, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("get_indexing_status", job_id=job_id)
        if status["status"] in TERMINAL:
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)


async def index(stack: Stack, repo: Path, name: str) -> dict[str, Any]:
    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name=name)
        return await finish(client, started["job_id"])


def make_repo(root: Path, name: str, files: dict[str, str], seed: int) -> Path:
    repo = root / name
    for relative, content in files.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_text(content, encoding="utf-8")
    generate_repo(repo / "lib", 12, 40, seed=seed)
    return repo.resolve()


async def stored_dimensions(db: asyncpg.Pool, repo: Path) -> set[int]:
    """Dimensions of the repository's stored vectors (chunks still waiting for theirs have none)."""
    rows = await db.fetch(
        "SELECT DISTINCT vector_dims(c.embedding) AS dims FROM chunks c JOIN repositories r ON r.id = c.repository_id "
        "WHERE r.path = $1 AND c.embedding IS NOT NULL",
        str(repo),
    )
    return {row["dims"] for row in rows}


def control(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}/control", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200


def by_repository(answer: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for hit in answer["results"]:
        grouped.setdefault(hit["repository"], []).append(hit)
    return grouped


async def test_repositories_of_two_dimensions_are_searched_from_one_server_and_database(
    start_stack: Callable[..., Stack], db: asyncpg.Pool, fake_models: str
) -> None:
    root = Path(tempfile.mkdtemp(prefix="cbm-test-embedders-repos-"))
    alpha = make_repo(root, "alpha", {"net/retry.go": RETRY_GO}, seed=41)
    beta = make_repo(root, "beta", {"src/parser.rs": PARSER_RS}, seed=42)

    small = start_stack("fake-384", 384)
    assert (await index(small, alpha, "alpha"))["status"] == "completed"
    # A server and workers for a 768-dimensional model start on the database of 384-dimensional vectors.
    large = start_stack("fake-768", 768)
    assert (await index(large, beta, "beta"))["status"] == "completed"
    assert await stored_dimensions(db, alpha) == {384} and await stored_dimensions(db, beta) == {768}
    indexes = {
        row["indexname"] for row in await db.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")
    }
    assert {"chunks_embedding_hnsw_384", "chunks_embedding_hnsw_768"} <= indexes

    for stack in (small, large):  # either server embeds each repository's query with that repository's model
        async with stack.client() as client:
            listed = {r["name"]: r for r in (await client.call("list_repositories"))["repositories"]}
            assert (listed["alpha"]["embedder"], listed["alpha"]["dimension"]) == ("ollama:fake-384", 384)
            assert (listed["beta"]["embedder"], listed["beta"]["dimension"]) == ("ollama:fake-768", 768)
            both = await client.call("search_code", query="retry with backoff split csv fields", limit=20)
            assert both["message"] is None, both
            grouped = by_repository(both)
            assert set(grouped) == {"alpha", "beta"}, both
            for name in ("alpha", "beta"):
                assert any(hit["vector_rank"] is not None for hit in grouped[name]), (name, both)
            vector = await client.call("search_code", query="retry with backoff split csv fields", mode="vector")
            assert set(by_repository(vector)) == {"alpha", "beta"} and vector["mode"] == "vector"
            # The query's own words are the nearest vectors of the fake model: the exact chunk ranks first.
            retry = await client.call("search_code", query=RETRY_GO, repository="alpha", mode="vector", limit=1)
            assert retry["results"][0]["file_path"] == "net/retry.go", retry
            parser = await client.call("search_code", query=PARSER_RS, repository="beta", mode="vector", limit=1)
            assert parser["results"][0]["file_path"] == "src/parser.rs", parser

    # Switching back and forth: each index run re-indexes with the indexing stack's model, same database.
    for stack, dimension in ((large, 768), (small, 384)):
        final = await index(stack, alpha, "alpha")
        assert final["status"] == "completed" and "full re-index" in final["progress_message"], final
        assert await stored_dimensions(db, alpha) == {dimension}
        assert await stored_dimensions(db, beta) == {768}
        async with small.client() as client:
            both = await client.call("search_code", query="retry with backoff split csv fields", limit=20)
            assert set(by_repository(both)) == {"alpha", "beta"}, both


async def test_search_falls_back_to_full_text_when_the_embedder_is_down(
    start_stack: Callable[..., Stack], fake_models: str
) -> None:
    root = Path(tempfile.mkdtemp(prefix="cbm-test-embedders-down-"))
    gamma = make_repo(root, "gamma", {"net/retry.go": RETRY_GO}, seed=43)
    stack = start_stack("fake-384", 384)
    assert (await index(stack, gamma, "gamma"))["status"] == "completed"
    control(fake_models, {"fail": True})
    try:
        async with stack.client() as client:
            for mode in ("hybrid", "vector"):
                begin = time.perf_counter()
                answer = await client.call("search_code", query="RetryWithBackoff", repository="gamma", mode=mode)
                seconds = time.perf_counter() - begin
                print(f"\nsearch with the embedder down ({mode}): {seconds:.2f} s")
                assert answer["mode"] == "text", answer
                assert answer["results"] and answer["results"][0]["file_path"] == "net/retry.go", answer
                assert "full-text results" in answer["message"] and "ollama:fake-384 (gamma)" in answer["message"]
                assert "HTTP 503" in answer["message"], answer["message"]
    finally:
        control(fake_models, {"fail": False})
    async with stack.client() as client:
        answer = await client.call("search_code", query="RetryWithBackoff", repository="gamma")
        assert answer["mode"] == "hybrid" and answer["message"] is None, answer


async def test_workers_with_two_models_of_one_dimension_do_not_mix_their_vectors(
    start_stack: Callable[..., Stack], db: asyncpg.Pool
) -> None:
    """Planner on one model, embed worker on another of the same size: the job fails and says why."""
    root = Path(tempfile.mkdtemp(prefix="cbm-test-embedders-mixed-"))
    delta = make_repo(root, "delta", {"net/retry.go": RETRY_GO}, seed=44)
    stack = start_stack("fake-a", 384, workers=False)
    queues = ["-Q", "index.plan", "index.chunk", "index.write", "index.coordinate"]
    groups = [
        stack._spawn(
            name,
            [
                str(Path(sys.executable).parent / "dramatiq"),
                "actors.worker",
                "--processes",
                "1",
                "--threads",
                "2",
                *args,
            ],
            {"CODEBASE_MCP_OLLAMA_MODEL": model, "dramatiq_prom_port": str(free_port())},
        )
        for name, model, args in (("planners", "fake-a", queues), ("embedders", "fake-b", ["-Q", "index.embed"]))
    ]
    try:
        final = await index(stack, delta, "delta")
    finally:
        for group in groups:
            Stack._kill(group, signal.SIGKILL)  # not the stack's own workers: its stop() does not know them
    assert final["status"] == "failed", final
    assert "the embed worker makes ollama:fake-b vectors (384 dimensions)" in final["error_message"], final
    assert "planned for ollama:fake-a (384 dimensions)" in final["error_message"], final
    assert await stored_dimensions(db, delta) == set()  # nothing of the other model was stored


async def test_migration_0004_keeps_vectors_of_the_old_fixed_dimension_column() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-0004-pg-"))
    try:
        url = ensure_embedded_postgres(data_dir, free_port())
        plain = url.replace("postgresql+asyncpg://", "postgresql://")

        def to_0003(connection: Any) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            config.attributes["embedding_dimension"] = 384
            command.upgrade(config, "0003")

        raw_engine = create_async_engine(url)
        async with raw_engine.begin() as connection:
            await connection.run_sync(to_0003)
        await raw_engine.dispose()
        conn = await asyncpg.connect(plain)
        await register_vector(conn)
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
            )
            == "vector(384)"
        )
        repo_id = uuid.uuid4()
        vector = np.random.default_rng(4).standard_normal(384).astype(np.float32)
        vector /= np.linalg.norm(vector)
        await conn.execute("INSERT INTO repositories (id, path, name) VALUES ($1, '/old/repo', 'old')", repo_id)
        file_id = await conn.fetchval(
            "INSERT INTO files (repository_id, path, content_hash, language, size_bytes, line_count) "
            "VALUES ($1, 'a.py', 'h', 'python', 10, 1) RETURNING id",
            repo_id,
        )
        await conn.execute(
            "INSERT INTO chunks (file_id, repository_id, ordinal, start_line, end_line, language, content, embedding) "
            "VALUES ($1, $2, 0, 1, 1, 'python', 'def old(): pass', $3)",
            file_id,
            repo_id,
            vector,
        )
        await conn.close()

        await upgrade_to_head(url, 768)  # a server configured with another dimension: no refusal

        conn = await asyncpg.connect(plain)
        await register_vector(conn)
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
            )
            == "vector"
        )
        cache = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embedding_cache'::regclass AND attname = 'embedding'"
        )
        assert cache == "vector"
        kept = await conn.fetchval("SELECT embedding FROM chunks WHERE repository_id = $1", repo_id)
        assert np.allclose(np.asarray(kept.to_list(), dtype=np.float32), vector)
        assert await conn.fetchval("SELECT dimension FROM repositories WHERE id = $1", repo_id) == 384
        names = {
            row["indexname"] for row in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")
        }
        assert {"chunks_embedding_hnsw_384", "chunks_embedding_hnsw_768"} <= names
        assert "chunks_embedding_hnsw" not in names
        await conn.close()

        searcher = create_engine(url)
        async with searcher.begin() as connection:
            hits = await run_search(
                connection,
                query="old",
                vectors=[VectorQuery(vector.tolist(), [repo_id])],
                filters=Filters(),
                limit=5,
                mode="vector",
            )
            # One row: only with sequential scans off does the plan show that the index can serve it.
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                row[0]
                for row in await connection.exec_driver_sql(
                    "EXPLAIN SELECT id FROM chunks WHERE vector_dims(embedding) = 384 "
                    "ORDER BY (embedding::vector(384)) <=> $1::vector(384) LIMIT 5",
                    (vector,),
                )
            )
        await searcher.dispose()
        assert [hit.content for hit in hits] == ["def old(): pass"] and hits[0].score == pytest.approx(1.0)
        assert "chunks_embedding_hnsw_384" in plan, plan
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
