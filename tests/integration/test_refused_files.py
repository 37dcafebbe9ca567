"""One file PostgreSQL refuses is skipped and reported, never fatal (issue 16, "one bad file").

The chunk stage keeps out NUL bytes and undecodable names (tests/integration/test_hostile_trees.py);
these files pass it and only PostgreSQL refuses them, at the write stage: a path longer than a
btree index entry holds (``files (repository_id, path)``, about 2,700 bytes), and a definition
whose name is so long that the chunk's ``tsvector`` passes PostgreSQL's limit of 1 MB of lexemes
(the content is cut at 20,000 characters for it, migration 0003, but the header carries the
whole name; with the default MAX_FILE_BYTES of 1,000,000 a file is too small to get there, so
this stack raises it to 3 MB).
Before actors/storing.py each failed its batch's write ten times and then the whole job. Files
with odd but valid names are stored as they are. Real server, workers, RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import string
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.stack import Stack, finish

#: Names that are valid UTF-8 but odd: control characters, quotes, backslash, newline, RTL
#: override, emoji, a leading dash, a 255-byte component, SQL and LIKE metacharacters.
ODD_NAMES = (
    "tab\there.py",
    "new\nline.py",
    "ctrl\x01\x1f\x7f.py",
    "quote'dq\"back\\slash.py",
    "rtl\u202eyp.txt.py",
    "emoji_\U0001f600.py",
    "-leading-dash.py",
    "per%cent_under_score.py",
    ("l" * 252) + ".py",
)


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., Stack]) -> Stack:
    # Small batches, so that the long path shares its batch with good files.
    env = {"CODEBASE_MCP_BATCH_SIZE": "4", "CODEBASE_MCP_MAX_FILE_BYTES": "3000000"}
    return start_stack(env=env, worker_processes=1)


def _camel_case_name(words: int, seed: int) -> str:
    """One identifier of ``words`` random capitalised words: full-text search splits it into them."""
    rng = random.Random(seed)
    return "".join(
        rng.choice(string.ascii_uppercase) + "".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(words)
    )


def _long_relative_path(seed: int) -> str:
    """A path of about 3,000 bytes in components of 200 random characters (incompressible, so
    PostgreSQL cannot squeeze the index entry under its limit)."""
    rng = random.Random(seed)
    parts = ["".join(rng.choices(string.ascii_letters + string.digits, k=200)) for _ in range(15)]
    return "/".join(parts) + "/deep.py"


async def _not_indexed(db: asyncpg.Pool, job_id: str) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT detail FROM job_events WHERE job_id = $1 AND event = 'files_not_indexed'", uuid.UUID(job_id)
    )
    reasons: dict[str, str] = {}
    for row in rows:
        detail: dict[str, Any] = json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"]
        reasons.update((path, reason) for path, reason in detail["failed"])
    return reasons


async def _indexed_paths(db: asyncpg.Pool, repo: Path) -> set[str]:
    rows = await db.fetch(
        "SELECT f.path FROM files f JOIN repositories r ON r.id = f.repository_id WHERE r.path = $1", str(repo)
    )
    return {row["path"] for row in rows}


async def test_files_postgres_refuses_are_reported_and_the_rest_is_indexed(stack: Stack, db: asyncpg.Pool) -> None:
    repo = Path(tempfile.mkdtemp(prefix="cbm-test-refused-")).resolve()
    good = {f"src/ok{i}.py": f"def good_function_{i}():\n    return {i}\n" for i in range(6)}
    for name in ODD_NAMES:
        good[f"odd/{name}"] = "def odd_name():\n    return 'still indexed'\n"
    for relative, content in good.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_text(content, encoding="utf-8")
    long_path = _long_relative_path(seed=7)
    (repo / long_path).parent.mkdir(parents=True)
    (repo / long_path).write_text("def deep():\n    return 'too deep to store'\n", encoding="utf-8")
    # A function named with 160,000 distinct words (1.1 MB of lexemes) on one line: one chunk,
    # whose header holds the name.
    name = _camel_case_name(160_000, seed=11)
    (repo / "src" / "names.py").write_text(f"def {name}(): return 1\n", encoding="utf-8")

    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name="refused")
        status = await finish(client, started["job_id"], timeout=300)
    # Before: "write_batch … failed 10 times" and the job failed with every file.
    assert status["status"] == "completed", status["error_message"]
    reasons = await _not_indexed(db, started["job_id"])
    assert status["files_failed"] == 2, (status, reasons)
    assert await _indexed_paths(db, repo) == set(good)
    assert set(reasons) == {long_path, "src/names.py"}, reasons
    assert reasons[long_path].startswith("path too long to store"), reasons
    assert reasons["src/names.py"].startswith("too many distinct words for PostgreSQL's full-text"), reasons
    async with db.acquire() as conn:
        # Chunks of the files kept line up with their own vectors (the batch was split per file).
        bad_rows = await conn.fetchval(
            "SELECT count(*) FROM chunks c JOIN files f ON f.id = c.file_id JOIN repositories r "
            "ON r.id = f.repository_id WHERE r.path = $1 AND c.content NOT LIKE '%' || "
            "CASE WHEN f.path LIKE 'odd/%' THEN 'still indexed' ELSE 'good_function_' END || '%'",
            str(repo),
        )
    assert bad_rows == 0

    # A second run refuses the same two again and changes nothing else.
    async with stack.client() as client:
        again = await client.call("start_indexing_background", repo_path=str(repo), name="refused")
        second = await finish(client, again["job_id"], timeout=300)
    assert second["status"] == "completed", second
    assert second["files_failed"] == 2 and second["files_unchanged"] == len(good), second
