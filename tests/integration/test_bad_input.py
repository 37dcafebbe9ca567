"""Bad input on the real stack: every case gets a clear error, or is skipped and reported, and
nothing already indexed is lost.

The server and workers are the real processes (``tests/integration/stack.py``) with
``CODEBASE_MCP_ALLOWED_ROOTS`` set. When the suite runs as root they are started without
CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (``setpriv``), so ``chmod 000`` stops them as it stops an
ordinary user; without ``setpriv`` the permission cases are skipped (root reads anything).

A baseline repository is indexed first; every test ends by checking that its ``files`` and
``chunks`` rows are exactly as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient, Stack, ToolCallError, finish, wait_for

SECRET_LINE = "root-only-secret-7f3a9c: must never be indexed"
CAPS = "-dac_override,-dac_read_search"


def privileges_dropped() -> bool:
    """True when the stack's processes are subject to file permissions (non-root, or root via setpriv)."""
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


class UnprivilegedStack(Stack):
    """The real stack; as root, each process runs without the capabilities that bypass permissions."""

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if os.geteuid() == 0 and shutil.which("setpriv"):
            args = ["setpriv", "--bounding-set", CAPS, "--inh-caps", CAPS, *args]
        return super()._spawn(name, args, extra_env)


@dataclass
class Tree:
    base: Path
    allowed: Path
    outside: Path
    secret: Path


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    # Under /tmp, world-traversable: the stack's processes may have no DAC override.
    base = Path(tempfile.mkdtemp(prefix="cbm-bad-input-")).resolve()
    base.chmod(0o755)
    allowed, outside = base / "allowed", base / "outside"
    allowed.mkdir()
    (outside / "repo").mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_text(SECRET_LINE + "\n", encoding="utf-8")
    yield Tree(base, allowed, outside, secret)
    for path in base.rglob("*"):  # give back what tests locked, so it can be removed
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., Stack], tree: Tree) -> Stack:
    env = {
        "CODEBASE_MCP_ALLOWED_ROOTS": str(tree.allowed),
        # Small batches, few in flight: the last batches of a job are read well after its scan.
        "CODEBASE_MCP_BATCH_SIZE": "5",
        "CODEBASE_MCP_BATCHES_IN_FLIGHT": "2",
    }
    return start_stack(env=env, stack_class=UnprivilegedStack, worker_processes=1, worker_threads=4)


async def snapshot(db: asyncpg.Pool, repo: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (content hash, chunk count, digest of the chunks' text and vectors) for one repository."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT f.path, f.content_hash, count(c.id) AS chunks, "
            "md5(string_agg(c.content || c.embedding::text, '|' ORDER BY c.ordinal)) AS digest "
            "FROM files f JOIN repositories r ON r.id = f.repository_id LEFT JOIN chunks c ON c.file_id = f.id "
            "WHERE r.path = $1 GROUP BY f.path, f.content_hash",
            str(repo),
        )
    return {row["path"]: (row["content_hash"], int(row["chunks"]), row["digest"] or "") for row in rows}


@dataclass
class Baseline:
    repo: Path
    job_id: str
    rows: dict[str, tuple[str, int, str]]


@pytest.fixture(scope="module")
async def baseline(stack: Stack, tree: Tree, db: asyncpg.Pool) -> Baseline:
    """A small repository indexed before any bad input is tried."""
    repo = tree.allowed / "baseline"
    generate_repo(repo, 12, 40, seed=77)
    async with stack.client() as session:
        started = await session.call("start_indexing_background", repo_path=str(repo), name="baseline")
        final = await finish(session, started["job_id"])
    assert final["status"] == "completed", final
    rows = await snapshot(db, repo)
    assert len(rows) == 12 and all(chunks > 0 for _, chunks, _ in rows.values())
    return Baseline(repo, started["job_id"], rows)


async def assert_intact(db: asyncpg.Pool, baseline: Baseline) -> None:
    assert await snapshot(db, baseline.repo) == baseline.rows, "rows of the baseline repository changed"


async def tool_error(client: McpClient, tool: str, **arguments: Any) -> str:
    """Call ``tool`` expecting an error; returns the text after the SDK's ``Error executing tool X: ``."""
    with pytest.raises(ToolCallError) as raised:
        await client.call(tool, **arguments)
    message = str(raised.value)
    prefix = f"Error executing tool {tool}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


async def job_count(client: McpClient) -> int:
    return len((await client.call("list_indexing_jobs", limit=500))["jobs"])


async def events(db: asyncpg.Pool, job_id: str, event: str) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT detail FROM job_events WHERE job_id = $1 AND event = $2 ORDER BY id", uuid.UUID(job_id), event
        )
    return [json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"] for row in rows]


# --- paths --------------------------------------------------------------------------------------


def bad_paths(tree: Tree) -> list[tuple[str, object, str]]:
    """(case, repo_path, what the message says after ``validation error: ``)."""
    allowed, outside = tree.allowed, tree.outside
    (allowed / "file.txt").write_text("not a directory\n", encoding="utf-8")
    (tree.base / "allowed-evil").mkdir(exist_ok=True)
    for link, target in (("escape", outside / "repo"), ("loop-a", allowed / "loop-b"), ("loop-b", allowed / "loop-a")):
        if not os.path.lexists(allowed / link):
            os.symlink(target, allowed / link)
    locked = allowed / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0)
    roots = f"({allowed}); set CODEBASE_MCP_ALLOWED_ROOTS to allow it"
    cases: list[tuple[str, object, str]] = [
        ("missing", str(allowed / "nope"), f"repository path {allowed / 'nope'} not found"),
        ("file", str(allowed / "file.txt"), f"repository path {allowed / 'file.txt'} is not a directory"),
        ("relative", "allowed/baseline", "repo_path 'allowed/baseline' must be absolute"),
        (
            "dot-dot",
            str(allowed / "baseline" / ".." / ".." / "outside" / "repo"),
            f"repository path {outside / 'repo'} is outside the allowed roots {roots}",
        ),
        ("symlink-out", str(allowed / "escape"), f"repository path {outside / 'repo'} is outside the allowed roots"),
        ("outside", str(outside / "repo"), f"repository path {outside / 'repo'} is outside the allowed roots"),
        (
            "prefix-sibling",
            str(tree.base / "allowed-evil"),
            f"repository path {tree.base / 'allowed-evil'} is outside the allowed roots",
        ),
        ("root", "/", "repository path / is outside the allowed roots"),
        ("loop", str(allowed / "loop-a"), f"repository path {allowed / 'loop-a'} cannot be resolved: symlink loop"),
        ("nul", str(allowed) + "/a\x00b", "repo_path contains a NUL byte"),
        ("empty", "", "repo_path must be a non-empty path to a directory"),
        ("blank", "   ", "repo_path must be a non-empty path to a directory"),
        ("too-long", "/" + "a" * 5000, "repo_path is 5,001 characters long; at most 4,096 are accepted"),
        ("long-name", str(allowed / ("n" * 300)), f"repository path {allowed}/nnnn"),
    ]
    if privileges_dropped():
        cases.append(("unreadable", str(locked), f"repository path {locked} is not readable by the server"))
    return cases


async def test_bad_repository_paths_are_refused(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool
) -> None:
    jobs_before = await job_count(client)
    for case, repo_path, expected in bad_paths(tree):
        message = await tool_error(client, "start_indexing_background", repo_path=repo_path, name=f"bad-{case}")
        assert message.startswith(f"validation error: {expected}"), (case, message)
        assert len(message) < 1000, (case, len(message))
    assert await job_count(client) == jobs_before, "a refused path created a job"
    await assert_intact(db, baseline)


async def test_a_path_inside_the_roots_through_dot_dot_and_symlinks_is_accepted(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool
) -> None:
    """The check is on the resolved path: ``..`` and a symlink that stay inside are fine."""
    os.symlink(baseline.repo, tree.allowed / "alias", target_is_directory=True)
    for repo_path in (str(tree.allowed / "alias"), str(tree.allowed / "alias" / ".." / "baseline")):
        started = await client.call("start_indexing_background", repo_path=repo_path, name="again")
        assert started["repo_path"] == str(baseline.repo)
        final = await finish(client, started["job_id"])
        assert final["status"] == "completed", final
        # Nothing changed since the baseline was indexed: every file is checked and found unchanged.
        assert final["files_total"] == 0 and final["files_unchanged"] == 12, final
    await assert_intact(db, baseline)  # re-indexing unchanged files rewrites nothing


# --- arguments ------------------------------------------------------------------------------------


async def test_wrong_argument_types_and_values(client: McpClient, baseline: Baseline, db: asyncpg.Pool) -> None:
    jobs_before = await job_count(client)
    schema = "validation error for "  # pydantic, raised by the SDK before the tool runs

    message = await tool_error(client, "start_indexing_background", repo_path=123)
    assert message.startswith(f"1 {schema}start_indexing_backgroundArguments\nrepo_path\n"), message
    assert "Input should be a valid string" in message
    message = await tool_error(client, "get_indexing_status", job_id=None)
    assert message.startswith(f"1 {schema}get_indexing_statusArguments\njob_id\n"), message
    message = await tool_error(client, "list_indexing_jobs", limit="ten")
    assert "limit\n  Input should be a valid integer" in message, message
    message = await tool_error(client, "search_code", query="retry", limit="ten")
    assert "limit\n  Input should be a valid integer" in message, message
    message = await tool_error(client, "search_code", query="retry", limit=2.5)
    assert "limit\n  Input should be a valid integer" in message, message
    message = await tool_error(client, "get_indexing_status")
    assert "job_id\n  Missing required argument" in message or "job_id\n  Field required" in message, message

    # The bounds are in the input schema, so the SDK refuses them by name before the tool runs.
    for limit in (0, -1, 101, 10**12, 2**70):
        message = await tool_error(client, "search_code", query="retry", limit=limit)
        bound = "greater than or equal to 1" if limit < 1 else "less than or equal to 100"
        assert f"limit\n  Input should be {bound}" in message, message
    for limit in (0, 501, 10**18):
        message = await tool_error(client, "list_indexing_jobs", limit=limit)
        bound = "greater than or equal to 1" if limit < 1 else "less than or equal to 500"
        assert f"limit\n  Input should be {bound}" in message, message
    listed = await client.call("list_indexing_jobs", limit=500)
    assert len(listed["jobs"]) == jobs_before

    for job_id in ("", "not-a-uuid", "'; DROP TABLE indexing_jobs; --", "x" * 100_000, "12345678-1234-1234-1234"):
        for tool in ("get_indexing_status", "cancel_indexing_background"):
            message = await tool_error(client, tool, job_id=job_id)
            assert message.startswith("validation error: job_id "), message
            assert "is not a valid UUID" in message
            assert len(message) < 300
    unknown = str(uuid.uuid4())
    for tool in ("get_indexing_status", "cancel_indexing_background"):
        assert await tool_error(client, tool, job_id=unknown) == f"job {unknown} not found"
    message = await tool_error(client, "cancel_indexing_background", job_id=baseline.job_id)
    assert message == f"cannot cancel job {baseline.job_id}: it is already completed"

    message = await tool_error(client, "list_indexing_jobs", status="bogus")
    assert "status\n  Input should be 'pending', 'running', 'blocked', 'completed', 'failed' or 'cancelled'" in message
    message = await tool_error(client, "list_indexing_jobs", created_after="yesterday")
    assert message == "validation error: created_after 'yesterday' is not an ISO-8601 timestamp"
    empty = await client.call("list_indexing_jobs", repo_path="/no/such/path")
    assert empty["jobs"] == []
    message = await tool_error(client, "list_indexing_jobs", repo_path="/tmp/a\x00b")
    assert message == "validation error: repo_path contains a NUL byte"

    assert await tool_error(client, "search_code", query="") == "validation error: query must not be empty"
    assert await tool_error(client, "search_code", query="  \n") == "validation error: query must not be empty"
    assert await tool_error(client, "search_code", query="a\x00b") == "validation error: query contains a NUL byte"
    message = await tool_error(client, "search_code", query="x" * 100_000)
    assert message == "validation error: query is 100,000 characters long; at most 8,000 are accepted"
    message = await tool_error(client, "search_code", query="retry", language="py\x00")
    assert message == "validation error: language contains a NUL byte"
    message = await tool_error(client, "search_code", query="retry", repository="no-such-repo")
    assert message.startswith("repository 'no-such-repo' not found"), message

    # The good calls still work, and the bad ones left no trace.
    found = await client.call("search_code", query="def", repository=str(baseline.repo), limit=100)
    assert 0 < len(found["results"]) <= 100
    assert await job_count(client) == jobs_before
    await assert_intact(db, baseline)


# --- repository contents ------------------------------------------------------------------------


def build_awkward_repo(repo: Path, tree: Tree) -> dict[str, Any]:
    """One of each awkward thing a repository can hold; returns what the job must report."""
    repo.mkdir()
    (repo / "good.py").write_text("def good():\n    return 1\n", encoding="utf-8")
    (repo / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (repo / "blob.py").write_bytes(b"def x():\n    pass\n\x00\x01\x02binary tail\n")
    (repo / "latin1.py").write_bytes(b"# caf\xe9 cr\xe8me\nname = 'na\xefve'\n\xff\xfe\xfd = 1\n")
    (repo / "huge_line.js").write_bytes(b"var x = '" + b"a" * (10 * 1024 * 1024) + b"';\n")
    (repo / "long_line.py").write_text("x = '" + "b" * 900_000 + "'\n", encoding="utf-8")
    (repo / "empty.py").write_bytes(b"")
    (repo / "inside_link.py").symlink_to(repo / "good.py")
    (repo / "escape.py").symlink_to(tree.secret)
    (repo / "dangling.py").symlink_to(repo / "does-not-exist.py")
    (repo / "sub").mkdir()
    (repo / "sub" / "code.py").write_text("def sub():\n    return 2\n", encoding="utf-8")
    (repo / "sub" / "loop").symlink_to(repo, target_is_directory=True)
    (repo / "outside_dir").symlink_to(tree.outside, target_is_directory=True)
    os.mkfifo(repo / "pipe.py")
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[core]\n", encoding="utf-8")
    (repo / "locked.py").write_text("def locked():\n    pass\n", encoding="utf-8")
    (repo / "locked.py").chmod(0)
    (repo / "lockeddir").mkdir()
    (repo / "lockeddir" / "hidden.py").write_text("def hidden():\n    pass\n", encoding="utf-8")
    (repo / "lockeddir").chmod(0)
    scan_skipped = {
        "binary": 2,  # image.png (by extension), blob.py (a NUL byte, found when the planner hashes it)
        "too large": 1,  # huge_line.js, 10 MB on one line
        "symlink outside repository": 1,  # escape.py
        "broken symlink": 1,  # dangling.py
        "symlink to a directory": 2,  # sub/loop, outside_dir: never followed
        "not a regular file": 1,  # pipe.py
    }
    indexed = {"good.py", "latin1.py", "long_line.py", "empty.py", "inside_link.py", "sub/code.py"}
    failed: list[list[str]] = []
    if privileges_dropped():
        scan_skipped["unreadable directory"] = 1  # lockeddir
        failed = [["locked.py", "unreadable: Permission denied"]]
    else:  # root with every capability reads anything
        indexed |= {"locked.py", "lockeddir/hidden.py"}
    return {
        "scan_skipped": scan_skipped,
        "read_skipped": [],  # the planner's hashing already set blob.py aside
        "failed": failed,
        "indexed": indexed,
    }


async def test_awkward_files_are_skipped_or_failed_with_reasons(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool
) -> None:
    repo = tree.allowed / "awkward"
    expected = build_awkward_repo(repo, tree)
    started = await client.call("start_indexing_background", repo_path=str(repo), name="awkward")
    final = await finish(client, started["job_id"])
    assert final["status"] == "completed", final

    indexed, failed, read_skipped = expected["indexed"], expected["failed"], expected["read_skipped"]
    assert final["files_total"] == len(indexed) + len(failed) + len(read_skipped)
    assert final["files_indexed"] == len(indexed)
    assert final["files_failed"] == len(failed)
    assert final["files_skipped"] == sum(expected["scan_skipped"].values()) + len(read_skipped)
    assert final["progress_percentage"] == 100

    planned = await events(db, started["job_id"], "planned")
    assert planned[0]["skipped"] == expected["scan_skipped"]
    not_indexed = await events(db, started["job_id"], "files_not_indexed")
    assert sorted(item for event in not_indexed for item in event["skipped"]) == read_skipped
    assert sorted(item for event in not_indexed for item in event["failed"]) == failed

    rows = await snapshot(db, repo)
    assert set(rows) == indexed
    assert rows["empty.py"][1] == 0  # an empty file is known, with no chunks
    async with db.acquire() as conn:
        stored = await conn.fetch(
            "SELECT f.path, c.content FROM chunks c JOIN files f ON f.id = c.file_id "
            "JOIN repositories r ON r.id = f.repository_id WHERE r.path = $1",
            str(repo),
        )
    assert not any(SECRET_LINE in row["content"] for row in stored)
    latin1 = "".join(row["content"] for row in stored if row["path"] == "latin1.py")
    assert "caf\ufffd cr\ufffdme" in latin1  # invalid UTF-8 decoded with replacement characters
    long_line = [row["content"] for row in stored if row["path"] == "long_line.py"]
    assert long_line and all(len(content) <= 2000 for content in long_line)
    await assert_intact(db, baseline)


async def test_empty_repositories_complete_with_nothing_indexed(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool
) -> None:
    empty = tree.allowed / "empty-repo"
    empty.mkdir()
    only_ignored = tree.allowed / "only-ignored"
    for folder in (".git", "node_modules/pkg", "__pycache__"):
        (only_ignored / folder).mkdir(parents=True)
        (only_ignored / folder / "file.py").write_text("x = 1\n", encoding="utf-8")
    for repo in (empty, only_ignored):
        started = await client.call("start_indexing_background", repo_path=str(repo))
        final = await finish(client, started["job_id"])
        assert final["status"] == "completed", final
        assert (final["files_total"], final["files_indexed"], final["chunks_created"]) == (0, 0, 0)
        assert final["progress_percentage"] == 100
        assert final["error_message"] is None
    await assert_intact(db, baseline)


# --- the tree changes under a running job -------------------------------------------------------


async def test_files_deleted_or_changed_while_indexing(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool, fake_embedding_url: str
) -> None:
    from tests.fixtures.fake_embedding_server import set_embed_delay

    repo = tree.allowed / "mutating"
    generate_repo(repo, 80, 40, seed=91)
    set_embed_delay(fake_embedding_url, 20.0)  # slow enough that the last batches wait many seconds
    try:
        started = await client.call("start_indexing_background", repo_path=str(repo), name="mutating")
        job = uuid.UUID(started["job_id"])

        async def waiting_batches() -> list[list[str]] | None:
            async with db.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT files FROM index_batches WHERE job_id = $1 AND state = 'pending' ORDER BY batch_no DESC",
                    job,
                )
            return [[item["path"] for item in json.loads(row["files"])] for row in rows] or None

        batches = await wait_for(waiting_batches, timeout=120, what="a planned job with undispatched batches")
        assert len(batches) >= 3, "the job ran too fast to change files under it"
        last, second, third = batches[0], batches[1], batches[2]
        deleted = last[:2]
        changed = second[:2]
        to_symlink, to_fifo = third[0], third[1]
        for path in deleted:
            (repo / path).unlink()
        new_bytes = {}
        for path in changed:
            with open(repo / path, "ab") as handle:
                handle.write(b"\ndef appended_while_indexing():\n    return 'changed'\n")
            new_bytes[path] = (repo / path).read_bytes()
        (repo / to_symlink).unlink()
        (repo / to_symlink).symlink_to(tree.secret)
        (repo / to_fifo).unlink()
        os.mkfifo(repo / to_fifo)
        async with db.acquire() as conn:
            undispatched = await conn.fetchval(
                "SELECT count(*) FROM index_batches WHERE job_id = $1 AND state = 'pending' "
                "AND files @> ANY(ARRAY[$2::jsonb, $3::jsonb, $4::jsonb])",
                job,
                json.dumps([{"path": last[0]}]),
                json.dumps([{"path": second[0]}]),
                json.dumps([{"path": third[0]}]),
            )
        assert undispatched == 3, "a changed batch was dispatched before the change; the test proves nothing"
        set_embed_delay(fake_embedding_url, 0.0)
        final = await finish(client, started["job_id"])
    finally:
        set_embed_delay(fake_embedding_url, 0.0)
    assert final["status"] == "completed", final
    assert final["files_total"] == 80
    assert final["files_failed"] == 4
    assert final["files_indexed"] == 76
    not_indexed = await events(db, started["job_id"], "files_not_indexed")
    reasons = sorted(item for event in not_indexed for item in event["failed"])
    assert reasons == sorted(
        [[path, "deleted since the scan"] for path in deleted]
        + [[to_symlink, "symlink outside repository"], [to_fifo, "unreadable: not a regular file"]]
    )
    rows = await snapshot(db, repo)
    assert set(rows).isdisjoint({*deleted, to_symlink, to_fifo})
    for path, body in new_bytes.items():
        assert rows[path][0] == hashlib.sha256(body).hexdigest(), "a file changed before its read is stored as read"
    async with db.acquire() as conn:
        leaked = await conn.fetchval("SELECT count(*) FROM chunks WHERE strpos(content, $1) > 0", SECRET_LINE)
    assert leaked == 0
    await assert_intact(db, baseline)


# --- size -----------------------------------------------------------------------------------------


async def test_hundred_thousand_files_plan_and_cancel(
    client: McpClient, baseline: Baseline, tree: Tree, db: asyncpg.Pool
) -> None:
    """A 100,000-file directory: the scan finishes, status answers throughout, cancel stops it.

    About 30 s here (most of it writing the files), so it runs in the default suite."""
    repo = tree.allowed / "huge"

    def write_tree() -> None:
        for directory in range(100):
            folder = repo / f"d{directory:03}"
            folder.mkdir(parents=True)
            for index in range(1000):
                (folder / f"f{index:04}.py").write_bytes(b"v = %d\n" % index)

    # In a thread: written on this event loop, the files (a minute on a slow disk) would stall the
    # MCP client's streams on it, and its next request would fail on a dropped connection.
    await asyncio.to_thread(write_tree)
    started = await client.call("start_indexing_background", repo_path=str(repo), name="huge")
    latencies: list[float] = []

    async def planned() -> dict[str, Any] | None:
        status, seconds = await client.timed("get_indexing_status", job_id=started["job_id"])
        latencies.append(seconds)
        return status if status["files_total"] is not None else None

    begin = time.monotonic()
    status = await wait_for(planned, timeout=900, interval=0.5, what="the 100k-file scan")
    print(
        f"\n100k files: planned in {time.monotonic() - begin:.1f}s; status max {max(latencies) * 1000:.0f} ms "
        f"over {len(latencies)} calls while scanning"
    )
    assert status["files_total"] == 100_000
    assert status["batches_total"] == 100_000 // 5
    cancelled = await client.call("cancel_indexing_background", job_id=started["job_id"])
    assert cancelled["status"] == "cancelled"
    await assert_intact(db, baseline)
