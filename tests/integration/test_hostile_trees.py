"""The hostile tester's trees on the real stack (issue 16): what must never cost the index or leak.

- an unreadable directory or root during a re-index keeps what the index holds and says so;
- a repository swapped for a symlink outside ``ALLOWED_ROOTS`` while its job waits is not indexed;
- one file whose name is not valid UTF-8, or with a NUL past the binary sniff, is skipped, never fatal;
- a repository *named* like another repository's *path* does not capture that path.

The workers run without ``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH`` (``setpriv``) so that
``chmod 000`` means "unreadable" for them even when the tests run as root, as for a worker user.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors.chunking import embedding_text
from models.embedding_cache import text_hash
from tests.integration.stack import McpClient, Stack, ToolCallError

TERMINAL = ("completed", "failed", "cancelled")
DROP_DAC = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search",
    "--inh-caps",
    "-dac_override,-dac_read_search",
]


class UnprivilegedWorkersStack(Stack):
    """Workers that obey file permissions even as root; the server keeps its privileges."""

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if name == "workers" and os.geteuid() == 0:
            args = [*DROP_DAC, *args]
        return super()._spawn(name, args, extra_env)


@pytest.fixture(scope="module")
def allowed_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cbm-test-hostile-")).resolve()
    (root / "allowed").mkdir()
    yield root
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], make_vhost: Callable[[], str], allowed_root: Path) -> Iterator[Stack]:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: workers would read unreadable directories")
    log_dir = Path(tempfile.mkdtemp(prefix="cbm-test-hostile-logs-"))
    env = {
        **base_env,
        "CODEBASE_MCP_BROKER_URL": make_vhost(),
        "CODEBASE_MCP_ALLOWED_ROOTS": str(allowed_root / "allowed"),
    }
    stack = UnprivilegedWorkersStack(env=env, log_dir=log_dir, worker_processes=1)
    stack.start_workers()
    stack.start_server()
    yield stack
    stack.stop()


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


async def run_job(client: McpClient, repo: Path, *, timeout: float = 300) -> dict[str, Any]:
    started = await client.call("start_indexing_background", repo_path=str(repo))
    return await wait_job(client, started["job_id"], timeout=timeout)


async def wait_job(client: McpClient, job_id: str, *, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("get_indexing_status", job_id=job_id)
        if status["status"] in TERMINAL:
            return status
        assert time.monotonic() < deadline, f"job still {status['status']} after {timeout}s: {status}"
        await asyncio.sleep(0.2)


async def indexed_paths(db: asyncpg.Pool, repo: Path) -> list[str]:
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT f.path FROM files f JOIN repositories r ON r.id = f.repository_id WHERE r.path = $1 "
            "ORDER BY f.path",
            str(repo),
        )
    return [row["path"] for row in rows]


async def test_unreadable_directory_and_root_keep_their_indexed_files(
    stack: Stack, allowed_root: Path, db: asyncpg.Pool
) -> None:
    repo = _write_tree(
        allowed_root / "allowed" / "unreadable",
        {
            "top.py": "def top():\n    return 1\n",
            **{f"pkg/m{i}.py": f"def f{i}():\n    return {i}\n" for i in range(5)},
        },
    )
    async with stack.client() as client:
        first = await run_job(client, repo)
        assert first["status"] == "completed", first
        everything = await indexed_paths(db, repo)
        assert len(everything) == 6

        (repo / "pkg").chmod(0)
        try:
            again = await run_job(client, repo)
        finally:
            (repo / "pkg").chmod(0o755)
        assert again["status"] == "completed", again
        assert await indexed_paths(db, repo) == everything  # before the fix: only top.py was left
        assert "removed" not in again["progress_message"], again
        assert "1 path could not be read: pkg (Permission denied)" in again["progress_message"], again
        assert "5 indexed files under them kept" in again["progress_message"], again

        repo.chmod(0)
        try:
            root_job = await run_job(client, repo)
        finally:
            repo.chmod(0o755)
        assert root_job["status"] == "failed", root_job
        assert "cannot be listed (Permission denied); its index was left as it was" in root_job["error_message"]
        assert await indexed_paths(db, repo) == everything


async def test_a_pending_repository_swapped_for_a_symlink_outside_the_roots_is_not_indexed(
    stack: Stack, allowed_root: Path, db: asyncpg.Pool
) -> None:
    repo = _write_tree(allowed_root / "allowed" / "swapped", {"harmless.py": "def harmless():\n    return 0\n"})
    secret = _write_tree(
        allowed_root / "secret", {"secret.py": 'TOP_SECRET_PASSWORD = "hunter2-outside-allowed-roots"\n'}
    )
    # No worker: the job is admitted (inside the roots) and its plan message waits in RabbitMQ,
    # as long as a pending job can wait; meanwhile the directory becomes a symlink to outside.
    stack.kill_workers()
    try:
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo))
            repo.rename(repo.with_name("swapped.real"))
            repo.symlink_to(secret)
            stack.start_workers()
            status = await wait_job(client, started["job_id"])
            assert status["status"] == "failed", status
            assert "no longer resolves to itself" in status["error_message"]
            assert str(secret) not in status["error_message"]
            assert await indexed_paths(db, repo) == []
            for scope in ({"repository": str(repo)}, {}):
                found = await client.call("search_code", query="TOP_SECRET_PASSWORD hunter2", mode="text", **scope)
                assert all("hunter2" not in hit["snippet"] for hit in found["results"]), found
    finally:
        if stack.workers is None or stack.workers.poll() is not None:
            stack.start_workers()


async def test_a_bad_file_name_and_a_late_nul_are_skipped_and_the_rest_indexed(
    stack: Stack, allowed_root: Path, db: asyncpg.Pool
) -> None:
    repo = _write_tree(
        allowed_root / "allowed" / "badfiles",
        {f"src/ok{i}.py": f"def ok{i}():\n    return {i}\n" for i in range(3)},
    )
    with open(os.path.join(os.fsencode(repo / "src"), b"bad\xff\xfename.py"), "wb") as handle:
        handle.write(b"def f(): pass\n")
    (repo / "media").mkdir()
    (repo / "media" / "logo.ai").write_bytes(b"%!PS-Adobe-3.0 text up front\n" * 400 + b"\x00\x01binary")
    async with stack.client() as client:
        status = await run_job(client, repo, timeout=120)
    assert status["status"] == "completed", status
    assert status["files_skipped"] == 2, status
    assert await indexed_paths(db, repo) == ["src/ok0.py", "src/ok1.py", "src/ok2.py"]


async def test_a_name_equal_to_another_repositorys_path_does_not_capture_that_path(
    stack: Stack, allowed_root: Path
) -> None:
    real = _write_tree(allowed_root / "allowed" / "realrepo", {"real.py": "def parse_invoice_real():\n    pass\n"})
    impostor = _write_tree(allowed_root / "allowed" / "impostor", {"fake.py": "def parse_invoice_fake():\n    pass\n"})
    async with stack.client() as client:
        assert (await run_job(client, real))["status"] == "completed"
        started = await client.call("start_indexing_background", repo_path=str(impostor), name=str(real))
        assert (await wait_job(client, started["job_id"]))["status"] == "completed"
        found = await client.call("search_code", query="parse invoice", repository=str(real), limit=20)
        assert found["results"], found
        assert {hit["repository_path"] for hit in found["results"]} == {str(real)}
        # The name still works as a name when no repository has that path (here: the impostor's own path does not
        # collide), and the path of the real one deletes the real one only.
        deleted = await client.call("delete_repository", repository=str(real))
        assert deleted["path"] == str(real)
        after = await client.call("search_code", query="parse invoice", repository=str(real), limit=20)
        assert {hit["repository_path"] for hit in after["results"]} == {str(impostor)}


async def test_an_unknown_users_home_as_a_repository_is_a_validation_error(stack: Stack) -> None:
    async with stack.client() as client:
        for tool, arguments in (
            ("search_code", {"query": "parse", "repository": "~nonexistentuser_cbm/x"}),
            ("delete_repository", {"repository": "~nonexistentuser_cbm/x"}),
        ):
            with pytest.raises(
                ToolCallError, match="cannot expand the home directory"
            ):  # before: "Error executing tool"
                await client.call(tool, **arguments)


async def _cache_keys(db: asyncpg.Pool, repo: Path) -> set[bytes]:
    """The embedding-cache keys of a repository's chunks, computed the way the embed stage computes them."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT c.header, c.content FROM chunks c JOIN repositories r ON r.id = c.repository_id WHERE r.path = $1",
            str(repo),
        )
    return {text_hash(embedding_text(row["header"], row["content"])) for row in rows}


async def _cached(db: asyncpg.Pool, keys: set[bytes]) -> set[bytes]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT text_hash FROM embedding_cache WHERE text_hash = ANY($1::bytea[])", list(keys))
    return {bytes(row["text_hash"]) for row in rows}


async def test_deleting_a_repository_purges_the_vectors_only_it_used(
    stack: Stack, allowed_root: Path, db: asyncpg.Pool
) -> None:
    shared = "def shared_between_the_two_checkouts():\n    return 7\n"
    first = _write_tree(
        allowed_root / "allowed" / "cache_a",
        {"shared.py": shared, "mine.py": "def only_in_the_first_checkout_zq():\n    return 1\n"},
    )
    second = _write_tree(allowed_root / "allowed" / "cache_b", {"shared.py": shared})
    async with stack.client() as client:
        for repo in (first, second):
            assert (await run_job(client, repo))["status"] == "completed"
        first_keys, second_keys = await _cache_keys(db, first), await _cache_keys(db, second)
        assert second_keys < first_keys and await _cached(db, first_keys) == first_keys
        await client.call("delete_repository", repository=str(first))
    # Before: all of them stayed. Now only what the other repository still holds.
    assert await _cached(db, first_keys) == second_keys
