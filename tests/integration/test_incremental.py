"""Incremental re-index on the real stack: only changed files cost work, vanished files leave the index.

The embedding cache alone would already avoid re-embedding identical texts, so "skipped at plan
time" is told apart from "cache hit" by what a cache hit still costs: ledger batches, chunk
deletes and rewrites (new chunk ids). An unchanged file must have none of them: no batch names it,
its chunk rows keep their ids, its ``files`` row keeps the job that indexed it. The embedder work
is counted by the test embedding server itself (``/stats``), not by the code under test.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fixtures.fake_embedding_server import served_texts, set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient, Stack, follow_job

FIRST_MODEL = "fake-deterministic"


async def run_job(client: McpClient, repo: Path, name: str, *, timeout: float = 600) -> list[dict[str, Any]]:
    """Index ``repo`` and poll until the job ends; returns every status seen."""
    started = await client.call("start_indexing_background", repo_path=str(repo), name=name)
    assert started["existing"] is False
    seen = await follow_job(client, started["job_id"], timeout=timeout, interval=0.1)
    percentages = [status["progress_percentage"] for status in seen]
    assert percentages == sorted(percentages), percentages
    assert seen[-1]["status"] == "completed", seen[-1]
    assert seen[-1]["progress_percentage"] == 100
    return seen


async def chunk_rows(db: asyncpg.Pool, repo: Path) -> dict[str, list[tuple[int, int, str]]]:
    """``path -> [(chunk id, ordinal, content)]`` of everything the index holds for ``repo``."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT f.path, c.id, c.ordinal, c.content FROM chunks c JOIN files f ON f.id = c.file_id "
            "JOIN repositories r ON r.id = f.repository_id WHERE r.path = $1 ORDER BY f.path, c.ordinal",
            str(repo.resolve()),
        )
    out: dict[str, list[tuple[int, int, str]]] = {}
    for row in rows:
        out.setdefault(row["path"], []).append((row["id"], row["ordinal"], row["content"]))
    return out


async def file_rows(db: asyncpg.Pool, repo: Path) -> dict[str, tuple[int, str, uuid.UUID]]:
    """``path -> (file id, content hash, job that indexed it)``."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT f.path, f.id, f.content_hash, f.job_id FROM files f JOIN repositories r "
            "ON r.id = f.repository_id WHERE r.path = $1",
            str(repo.resolve()),
        )
    return {row["path"]: (row["id"], row["content_hash"], row["job_id"]) for row in rows}


async def ledger_work(db: asyncpg.Pool, job_id: str) -> dict[str, int]:
    """What the job's batches carried: files, and texts embedded or served from the cache."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS batches, coalesce(sum(file_count), 0) AS files, "
            "coalesce(sum(texts_embedded), 0) AS embedded, coalesce(sum(texts_cached), 0) AS cached "
            "FROM index_batches WHERE job_id = $1",
            uuid.UUID(job_id),
        )
    return {key: int(row[key]) for key in ("batches", "files", "embedded", "cached")}


async def events(db: asyncpg.Pool, job_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event, detail FROM job_events WHERE job_id = $1 ORDER BY at, id", uuid.UUID(job_id)
        )
    return [(row["event"], json.loads(row["detail"]) if row["detail"] else None) for row in rows]


def unique_module(token: str, functions: int = 3) -> str:
    """Source whose every line carries ``token``: none of its chunk texts was ever embedded before."""
    lines = [f'"""Module {token}."""', ""]
    for index in range(functions):
        lines += [f"def changed_{token}_{index}() -> str:", f"    return 'value {token} {index}'", ""]
    return "\n".join(lines)


async def test_reindex_touches_only_what_changed(stack: Stack, db: asyncpg.Pool, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = Path(tempfile.mkdtemp(prefix="cbm-incr-")) / "repo"
    generate_repo(repo, 120, 40, seed=7001)
    total = sum(1 for _ in repo.rglob("*.py"))
    async with stack.client() as client:
        first = (await run_job(client, repo, "incr"))[-1]
        assert first["files_indexed"] == total and first["files_total"] == total
        assert first["files_unchanged"] == 0 and first["files_removed"] == 0
        chunks_before = await chunk_rows(db, repo)
        files_before = await file_rows(db, repo)
        assert len(files_before) == total and sum(len(rows) for rows in chunks_before.values()) > total

        # 1. Nothing changed (one file's mtime moved): no batch, no embedding, no chunk rewritten.
        touched = sorted(repo.rglob("module_*.py"))[0]
        os.utime(touched, (time.time() + 60, time.time() + 60))
        texts = served_texts(fake_embedding_url)
        unchanged = (await run_job(client, repo, "incr"))[-1]
        assert served_texts(fake_embedding_url) == texts
        assert unchanged["files_unchanged"] == total
        assert (unchanged["files_total"], unchanged["files_indexed"], unchanged["chunks_created"]) == (0, 0, 0)
        assert unchanged["batches_total"] == 0 and unchanged["files_removed"] == 0
        assert unchanged["progress_message"].startswith(f"up to date: {total:,} files unchanged")
        assert await ledger_work(db, unchanged["job_id"]) == {"batches": 0, "files": 0, "embedded": 0, "cached": 0}
        assert await chunk_rows(db, repo) == chunks_before  # same ids: not even a cache hit rewrote them
        assert await file_rows(db, repo) == files_before

        # 2. One file modified: only its chunks are embedded and replaced.
        modified = sorted(repo.rglob("module_*.py"))[5]
        relative = modified.relative_to(repo).as_posix()
        modified.write_text(unique_module(uuid.uuid4().hex), encoding="utf-8")
        texts = served_texts(fake_embedding_url)
        one = (await run_job(client, repo, "incr"))[-1]
        chunks_after = await chunk_rows(db, repo)
        embedded = served_texts(fake_embedding_url) - texts
        work = await ledger_work(db, one["job_id"])
        assert (one["files_total"], one["files_indexed"], one["files_unchanged"]) == (1, 1, total - 1)
        assert work["files"] == 1 and work["cached"] == 0
        assert embedded == work["embedded"] == len(chunks_after[relative]) == one["chunks_created"] > 0
        assert not {row[0] for row in chunks_after[relative]} & {row[0] for row in chunks_before[relative]}
        assert all("changed_" in row[2] or "Module" in row[2] for row in chunks_after[relative])
        assert {path: rows for path, rows in chunks_after.items() if path != relative} == {
            path: rows for path, rows in chunks_before.items() if path != relative
        }
        assert (await file_rows(db, repo))[relative][2] == uuid.UUID(one["job_id"])

        # 3. A file deleted, one added, one newly ignored by a nested .gitignore.
        deleted, ignored = sorted(repo.rglob("module_*.py"))[10:12]
        deleted_path, ignored_path = (path.relative_to(repo).as_posix() for path in (deleted, ignored))
        deleted.unlink()
        (ignored.parent / ".gitignore").write_text(ignored.name + "\n", encoding="utf-8")
        gitignore_path = (ignored.parent / ".gitignore").relative_to(repo).as_posix()
        (repo / "extra").mkdir()
        (repo / "extra" / "added.py").write_text(unique_module(uuid.uuid4().hex, 2), encoding="utf-8")
        old_ids = {row[0] for path in (deleted_path, ignored_path) for row in chunks_after[path]}
        moved = (await run_job(client, repo, "incr"))[-1]
        assert moved["files_removed"] == 2
        assert (moved["files_total"], moved["files_indexed"]) == (2, 2)
        assert moved["files_unchanged"] == total - 2
        files_now = await file_rows(db, repo)
        assert deleted_path not in files_now and ignored_path not in files_now
        assert {"extra/added.py", gitignore_path} <= files_now.keys() and len(files_now) == total
        chunks_now = await chunk_rows(db, repo)
        assert not old_ids & {row[0] for rows in chunks_now.values() for row in rows}
        assert chunks_now["extra/added.py"]
        async with db.acquire() as conn:
            orphans = await conn.fetchval(
                "SELECT count(*) FROM chunks c WHERE c.id = ANY($1::bigint[])", sorted(old_ids)
            )
        assert orphans == 0
        planned = dict(await events(db, moved["job_id"]))["planned"]
        assert planned is not None and (planned["files"], planned["removed"]) == (2, 2)


async def test_embedder_change_reindexes_everything(
    stack: Stack, start_stack: Callable[..., Stack], db: asyncpg.Pool, fake_embedding_url: str
) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = Path(tempfile.mkdtemp(prefix="cbm-incr-embedder-")) / "repo"
    generate_repo(repo, 40, 40, seed=7002)
    total = sum(1 for _ in repo.rglob("*.py"))
    async with stack.client() as client:
        await run_job(client, repo, "embedder-change")
    before = await chunk_rows(db, repo)

    # Same dimension, another model name: the workers of this stack embed with "another" embedder.
    other = start_stack(env={"CODEBASE_MCP_OLLAMA_MODEL": "fake-deterministic-v2"})
    texts = served_texts(fake_embedding_url)
    async with other.client() as client:
        final = (await run_job(client, repo, "embedder-change"))[-1]
        embedded = served_texts(fake_embedding_url) - texts
        work = await ledger_work(db, final["job_id"])
        after = await chunk_rows(db, repo)
        expected = f"embedder changed from ollama:{FIRST_MODEL} to ollama:fake-deterministic-v2: full re-index"
        assert (final["files_total"], final["files_indexed"], final["files_unchanged"]) == (total, total, 0)
        assert expected in final["progress_message"]
        changed = [detail for event, detail in await events(db, final["job_id"]) if event == "embedder_changed"]
        assert changed and changed[0] is not None and changed[0]["message"] == expected
        # Every chunk was rewritten and re-embedded: the cache is per embedder, so nothing came from it.
        assert not {row[0] for rows in after.values() for row in rows} & {
            row[0] for rows in before.values() for row in rows
        }
        assert sum(len(rows) for rows in after.values()) == sum(len(rows) for rows in before.values())
        assert embedded == work["embedded"] > 0 and work["embedded"] + work["cached"] == final["chunks_created"]
        async with db.acquire() as conn:
            recorded = await conn.fetchrow(
                "SELECT embedder, dimension FROM repositories WHERE path = $1", str(repo.resolve())
            )
        assert recorded["embedder"] == "ollama:fake-deterministic-v2"

        # The new embedder is now the recorded one: the next run is incremental again.
        again = (await run_job(client, repo, "embedder-change"))[-1]
        assert again["files_unchanged"] == total and again["files_total"] == 0
    other.stop()


@pytest.mark.scale
async def test_unchanged_reindex_at_scale(stack: Stack, db: asyncpg.Pool, fake_embedding_url: str) -> None:
    """The quickstart's 15,000 files: an unchanged repository re-indexes in seconds."""
    set_embed_delay(fake_embedding_url, 0)
    repo = Path(tempfile.mkdtemp(prefix="cbm-incr-15k-")) / "repo"
    generate_repo(repo, 15_000, 200, seed=7003)
    async with stack.client() as client:
        begin = time.monotonic()
        first = (await run_job(client, repo, "incr-15k", timeout=3600))[-1]
        full = time.monotonic() - begin
        assert first["files_indexed"] == 15_000
        begin = time.monotonic()
        again = (await run_job(client, repo, "incr-15k", timeout=600))[-1]
        seconds = time.monotonic() - begin
    assert again["files_unchanged"] == 15_000 and again["files_total"] == 0
    print(
        f"\nincremental: full index of 15,000 files {full:.1f}s; unchanged re-index {seconds:.2f}s "
        f"(job {again['elapsed_seconds']}s: {again['progress_message']!r})"
    )
    assert seconds < 60
