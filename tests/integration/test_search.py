"""``search_code``, ``list_repositories`` and ``delete_repository`` on the real stack.

Two small multi-language repositories are indexed through the MCP server, RabbitMQ and the
Dramatiq workers into this module's own PostgreSQL (so that "nothing is indexed yet" and the
counts are this module's alone); embeddings come from the suite's deterministic embedding server.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.search import RRF_K, Ranking, line_kinds, text_query_terms
from tests.fixtures.fake_embedding_server import control
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, REPO_ROOT, McpClient, Stack, ToolCallError, finish, private_cluster

USERS_TS = """\
export interface User {
  id: number;
  firstName: string;
  lastName: string;
}

export function getUserName(account: User): string {
  return `${account.firstName} ${account.lastName}`;
}

export async function fetchAccount(id: number): Promise<User> {
  const reply = await fetch(`/api/accounts/${id}`);
  return (await reply.json()) as User;
}
"""

RETRY_GO = """\
package backoff

import "time"

// RetryWithBackoff calls op until it succeeds, sleeping twice as long after every failure.
func RetryWithBackoff(op func() error, attempts int) error {
	delay := 100 * time.Millisecond
	var err error
	for i := 0; i < attempts; i++ {
		if err = op(); err == nil {
			return nil
		}
		time.Sleep(delay)
		delay *= 2
	}
	return err
}
"""

PARSER_RS = """\
/// Split a comma-separated line into trimmed fields.
pub fn parse_csv_line(line: &str) -> Vec<String> {
    line.split(',').map(|field| field.trim().to_string()).collect()
}

pub struct CsvReader {
    delimiter: char,
}
"""

SETTINGS_PY = '''\
"""Application settings read from the environment."""

import os


def load_database_url() -> str:
    """The database URL, from DATABASE_URL or a local default."""
    return os.environ.get("DATABASE_URL", "postgresql://localhost/app")
'''


@dataclass
class Indexed:
    alpha: Path
    beta: Path
    empty_answer: dict[str, Any]


def write(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


@pytest.fixture(scope="module")
def search_database() -> Iterator[str]:
    with private_cluster("cbm-test-search-pg-") as url:
        yield url


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., Stack], search_database: str) -> Stack:
    return start_stack(env={"CODEBASE_MCP_DATABASE_URL": search_database})


@pytest.fixture(scope="module")
async def sdb(search_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        search_database.replace("postgresql+asyncpg://", "postgresql://"), min_size=1, max_size=2
    )
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def indexed(stack: Stack, fake_embedding_url: str) -> Indexed:
    root = Path(tempfile.mkdtemp(prefix="cbm-test-search-repos-"))
    alpha, beta = root / "alpha", root / "beta"
    write(alpha, {"web/users.ts": USERS_TS, "net/retry.go": RETRY_GO, "config/settings.py": SETTINGS_PY})
    for part in range(4):  # several directories, so that path filters have matches outside the top hits
        generate_repo(alpha / "app" / f"mod{part}", 10, 60, seed=21 + part)
    write(beta, {"src/parser.rs": PARSER_RS, "README.md": "# Beta\n\nA CSV toolkit.\n"})
    for part in range(6):
        generate_repo(beta / "lib" / f"mod{part}", 10, 60, seed=31 + part)
    control(fake_embedding_url, {"delay_ms_per_text": 0})
    async with stack.client() as session:
        empty = await session.call("search_code", query="anything at all")
        for path, name in ((alpha, "alpha"), (beta, "beta")):
            started = await session.call("start_indexing_background", repo_path=str(path), name=name)
            final = await finish(session, started["job_id"])
            assert final["status"] == "completed", final
    return Indexed(alpha=alpha.resolve(), beta=beta.resolve(), empty_answer=empty)


def ids(answer: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(hit["repository"], hit["file_path"], hit["start_line"]) for hit in answer["results"]]


async def test_empty_index_names_the_tool_to_call(indexed: Indexed) -> None:
    answer = indexed.empty_answer
    assert answer["results"] == []
    assert "nothing is indexed yet" in answer["message"] and "start_indexing_background" in answer["message"]


async def test_hit_fields(client: McpClient, indexed: Indexed) -> None:
    answer = await client.call("search_code", query="retry with exponential backoff", limit=5)
    assert answer["mode"] == "hybrid" and len(answer["results"]) == 5
    top = answer["results"][0]
    assert (top["repository"], top["file_path"], top["language"]) == ("alpha", "net/retry.go", "go")
    assert top["repository_path"] == str(indexed.alpha)
    assert top["symbol"] == "RetryWithBackoff"
    assert top["start_line"] == 1 and top["end_line"] == len(RETRY_GO.splitlines())
    assert "delay *= 2" in top["snippet"]
    assert top["vector_rank"] is not None and top["text_rank"] is not None
    scores = [hit["score"] for hit in answer["results"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_filters_apply_in_every_mode(client: McpClient, indexed: Indexed, mode: str) -> None:
    query = "parse invoice record"
    by_name = await client.call("search_code", query=query, repository="beta", limit=8, mode=mode)
    by_path = await client.call("search_code", query=query, repository=str(indexed.beta), limit=8, mode=mode)
    assert len(by_name["results"]) == 8 and by_name["results"] == by_path["results"]
    assert {hit["repository"] for hit in by_name["results"]} == {"beta"}

    rust = await client.call("search_code", query="split line fields", language="rust", mode=mode)
    assert rust["results"] and {hit["file_path"] for hit in rust["results"]} == {"src/parser.rs"}
    alias = await client.call("search_code", query="split line fields", language="RS", mode=mode)
    assert alias["results"] == rust["results"]

    prefix = "app/"
    scoped = await client.call("search_code", query=query, path_prefix=prefix, limit=6, mode=mode)
    assert len(scoped["results"]) == 6
    assert all(hit["file_path"].startswith(prefix) and hit["repository"] == "alpha" for hit in scoped["results"])

    combined = await client.call(
        "search_code", query=query, repository="alpha", language="python", path_prefix="./app/", limit=4, mode=mode
    )
    assert len(combined["results"]) == 4
    for hit in combined["results"]:
        assert (hit["repository"], hit["language"]) == ("alpha", "python") and hit["file_path"].startswith(prefix)
    nothing = await client.call("search_code", query=query, repository="beta", language="go", mode=mode)
    assert nothing["results"] == [] and "indexed languages: markdown, python, rust" in nothing["message"]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_filtered_search_reaches_beyond_the_unfiltered_top(
    client: McpClient, indexed: Indexed, sdb: asyncpg.Pool, mode: str
) -> None:
    """A filter whose matches all rank below the unfiltered top-k still fills ``limit``."""
    query = "parse invoice record"
    limit = 5
    top = await client.call("search_code", query=query, limit=limit, mode=mode)
    tsquery = " | ".join(text_query_terms(query))
    async with sdb.acquire() as conn:
        rows = await conn.fetch(
            "SELECT r.name, f.path FROM chunks c JOIN files f ON f.id = c.file_id"
            " JOIN repositories r ON r.id = c.repository_id"
            " WHERE $1 OR c.search_vector @@ to_tsquery('english', $2)",
            mode == "vector",
            tsquery,
        )
    # Directory prefixes with enough matching chunks (any chunk in vector mode) but none in the top-k.
    matching: Counter[tuple[str, str]] = Counter()
    for row in rows:
        parts = row["path"].split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            matching[(row["name"], "/".join(parts[:depth]) + "/")] += 1
    in_top = {(hit["repository"], hit["file_path"]) for hit in top["results"]}
    candidates = sorted(
        (count, key)
        for key, count in matching.items()
        if count >= limit and not any(repo == key[0] and path.startswith(key[1]) for repo, path in in_top)
    )
    assert candidates, "the generated repositories have directories outside the top hits"
    name, directory = candidates[0][1]
    filtered = await client.call(
        "search_code", query=query, repository=name, path_prefix=directory, limit=limit, mode=mode
    )
    assert len(filtered["results"]) == limit
    assert all(hit["file_path"].startswith(directory) for hit in filtered["results"])


async def test_caller_errors(client: McpClient, indexed: Indexed) -> None:
    with pytest.raises(ToolCallError, match=r"not found; indexed repositories: alpha \(.*\), beta \("):
        await client.call("search_code", query="x", repository="gamma")
    with pytest.raises(ToolCallError, match="validation error: language 'klingon'.*indexed languages: go, markdown"):
        await client.call("search_code", query="x", language="klingon")
    with pytest.raises(ToolCallError, match="validation error: path_prefix '/etc' must be relative"):
        await client.call("search_code", query="x", path_prefix="/etc")
    with pytest.raises(ToolCallError, match=r"validation error: path_prefix 'app/\.\./\.\.' must not contain"):
        await client.call("search_code", query="x", path_prefix="app/../..")
    with pytest.raises(ToolCallError, match="validation error: query must not be empty"):
        await client.call("search_code", query="   ")
    for limit, bound in ((0, "greater than or equal to 1"), (101, "less than or equal to 100")):
        with pytest.raises(ToolCallError, match=f"limit\n  Input should be {bound}"):
            await client.call("search_code", query="x", limit=limit)
    with pytest.raises(ToolCallError, match="mode\n  Input should be 'hybrid', 'vector' or 'text'"):
        await client.call("search_code", query="x", mode="fuzzy")
    with pytest.raises(ToolCallError, match="repository 'gamma' not found"):
        await client.call("delete_repository", repository="gamma")


async def test_text_mode_finds_an_identifier_by_its_parts(client: McpClient, indexed: Indexed) -> None:
    # getUserName is its own chunk (line 7): definitions are no longer merged with their neighbours.
    split = await client.call("search_code", query="user name", mode="text", limit=3)
    assert ("alpha", "web/users.ts", 7) in ids(split), split
    exact = await client.call("search_code", query="getUserName", mode="text", limit=3)
    assert ids(exact)[0] == ("alpha", "web/users.ts", 7)
    assert all(hit["vector_rank"] is None and hit["text_rank"] is not None for hit in exact["results"])
    stop_words_only = await client.call("search_code", query="the of and", mode="text")
    assert stop_words_only["results"] == [] and "text mode" in stop_words_only["message"]


async def test_hybrid_fuses_both_rankings(client: McpClient, indexed: Indexed) -> None:
    query = "database URL environment default"
    vector = await client.call("search_code", query=query, mode="vector", limit=10)
    text = await client.call("search_code", query=query, mode="text", limit=10)
    hybrid = await client.call("search_code", query=query, limit=10)
    assert all(hit["text_rank"] is None for hit in vector["results"])
    assert all(hit["vector_rank"] is None for hit in text["results"])
    fused = ids(hybrid)
    assert ids(vector)[0] in fused and ids(text)[0] in fused
    assert any(hit["vector_rank"] is not None for hit in hybrid["results"])
    assert any(hit["text_rank"] is not None for hit in hybrid["results"])
    fusion: dict[tuple[str, str, int], float] = {}
    for hit, key in zip(hybrid["results"], fused, strict=True):
        fusion[key] = sum(1.0 / (RRF_K + rank) for rank in (hit["vector_rank"], hit["text_rank"]) if rank is not None)
        expected = fusion[key]
        prior = Ranking()
        code, comment = line_kinds(hit["snippet"], imports=prior.short_imports)
        if hit["role"] == "code" and code < prior.short_lines and comment >= prior.short_comment_ratio * max(code, 1):
            expected *= prior.short_factor  # little code under more comment: demoted (server.search.demote_short)
        assert hit["score"] == pytest.approx(expected, abs=1e-6)
    # A chunk that both methods rank first beats, in the fusion, one that only one of them found
    # (the length prior may then move it).
    assert max(fusion, key=lambda key: fusion[key]) == ("alpha", "config/settings.py", 1)


async def test_list_repositories_counts_match_the_database(
    client: McpClient, indexed: Indexed, sdb: asyncpg.Pool
) -> None:
    listed = {repo["name"]: repo for repo in (await client.call("list_repositories"))["repositories"]}
    assert {"alpha", "beta"} <= listed.keys()
    async with sdb.acquire() as conn:
        for name in ("alpha", "beta"):
            row = await conn.fetchrow(
                "SELECT r.path, (SELECT count(*) FROM files f WHERE f.repository_id = r.id) AS files,"
                " (SELECT count(*) FROM chunks c WHERE c.repository_id = r.id) AS chunks"
                " FROM repositories r WHERE r.name = $1",
                name,
            )
            repo = listed[name]
            assert (repo["path"], repo["files"], repo["chunks"]) == (row["path"], row["files"], row["chunks"])
            assert repo["files"] > 0 and repo["chunks"] >= repo["files"]
            assert repo["embedder"] and repo["dimension"] == 384 and repo["last_indexed_at"]
            assert repo["active_job_id"] is None
    assert listed["alpha"]["languages"] == ["go", "python", "typescript"]


async def test_delete_repository_refuses_during_a_job_then_removes_everything(
    client: McpClient, indexed: Indexed, sdb: asyncpg.Pool, fake_embedding_url: str, tmp_path: Path
) -> None:
    gamma = tmp_path / "gamma"
    write(gamma, {"tools/users.ts": USERS_TS})
    generate_repo(gamma / "pkg", 20, 40, seed=23)
    started = await client.call("start_indexing_background", repo_path=str(gamma), name="gamma")
    assert (await finish(client, started["job_id"]))["status"] == "completed"
    async with sdb.acquire() as conn:
        repository_id = await conn.fetchval("SELECT id FROM repositories WHERE name = 'gamma'")
        assert await conn.fetchval("SELECT count(*) FROM chunks WHERE repository_id = $1", repository_id) > 0

    # New content (nothing cached) embedded slowly keeps a second job running.
    generate_repo(gamma / "more", 40, 60, seed=24)
    control(fake_embedding_url, {"delay_ms_per_text": 50})
    try:
        again = await client.call("start_indexing_background", repo_path=str(gamma), name="gamma")
        assert again["status"] == "running"
        with pytest.raises(ToolCallError, match=f"cannot delete repository gamma .*job {again['job_id']} is"):
            await client.call("delete_repository", repository="gamma")
        listed = {repo["name"]: repo for repo in (await client.call("list_repositories"))["repositories"]}
        assert listed["gamma"]["active_job_id"] == again["job_id"]
        await client.call("cancel_indexing_background", job_id=again["job_id"])
        assert (await finish(client, again["job_id"]))["status"] == "cancelled"
    finally:
        control(fake_embedding_url, {"delay_ms_per_text": 0})

    deleted = await client.call("delete_repository", repository=str(gamma))
    assert deleted["name"] == "gamma" and deleted["files_deleted"] > 0 and deleted["chunks_deleted"] > 0
    assert deleted["jobs_deleted"] == 2
    async with sdb.acquire() as conn:
        for table in ("chunks", "files", "indexing_jobs"):
            left = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE repository_id = $1", repository_id)
            assert left == 0, table
        assert await conn.fetchval("SELECT count(*) FROM repositories WHERE id = $1", repository_id) == 0
    names = [repo["name"] for repo in (await client.call("list_repositories"))["repositories"]]
    assert "gamma" not in names and {"alpha", "beta"} <= set(names)
    with pytest.raises(ToolCallError, match="repository 'gamma' not found"):
        await client.call("search_code", query="user name", repository="gamma")


def test_cli_search_repos_and_delete(stack: Stack, indexed: Indexed) -> None:
    env = {**stack.env, "PYTHONPATH": str(REPO_ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "codebase-mcp"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )

    found = cli("search", "retry with backoff", "--repository", "alpha", "--language", "go", "--limit", "1")
    assert found.returncode == 0, found.stderr
    assert "alpha:net/retry.go:1-" in found.stdout and "RetryWithBackoff" in found.stdout
    as_json = json.loads(cli("search", "getUserName", "--mode", "text", "--limit", "2", "--json").stdout)
    assert as_json["mode"] == "text" and as_json["results"][0]["file_path"] == "web/users.ts"
    repos = json.loads(cli("repos", "--json").stdout)
    assert {"alpha", "beta"} <= {repo["name"] for repo in repos["repositories"]}
    bad = cli("search", "x", "--path-prefix", "../up")
    assert bad.returncode == 2 and "must not contain '..'" in bad.stderr
    missing = cli("delete-repo", f"/nonexistent/{uuid.uuid4().hex}")
    assert missing.returncode == 2 and "not found; indexed repositories: alpha" in missing.stderr


async def test_repeated_searches_keep_custom_plans(indexed: Indexed, search_database: str) -> None:
    """asyncpg prepares the search statement; after five runs PostgreSQL may cache a generic plan,
    which cannot use the HNSW index for the query's vector (search went from 2 to 50 ms at 10k
    chunks). Twelve searches on one connection must all have been planned for their own values."""
    import numpy as np
    from sqlalchemy import text as sql

    from models.database import create_engine
    from server.search import Filters, run_search

    engine = create_engine(search_database, pool_size=1)
    try:
        async with engine.connect() as conn:
            rng = np.random.default_rng(5)
            for _ in range(12):
                vector = rng.standard_normal(384).astype(np.float32)
                vector /= np.linalg.norm(vector)
                async with conn.begin():
                    hits = await run_search(
                        conn, query="retry the request", vector=vector.tolist(), filters=Filters(), limit=5
                    )
                assert hits
            plans = (
                await conn.execute(
                    sql(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                        "WHERE statement LIKE '%vector_hits%' AND statement NOT LIKE '%pg_prepared_statements%'"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert plans, "the search statement was not prepared"
    assert sum(row.generic_plans for row in plans) == 0, plans
    assert sum(row.custom_plans for row in plans) >= 12, plans
