"""Watched repositories on the real stack: fresh on every save with no call from the client.

Real server processes (``codebase-mcp serve``), real Dramatiq workers, PostgreSQL and RabbitMQ; the
file-system events are the kernel's (inotify through watchfiles). The embedder is the deterministic
test server, whose per-text delay makes a job last long enough to save files while it runs.
Latencies are printed, not asserted: the bounds below only stop a test that would otherwise hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

from models.settings import Settings
from server.watcher import watch_lease
from tests.fixtures.fake_embedding_server import set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.conftest import StartStack
from tests.integration.stack import BIN, REPO_ROOT, McpClient, Stack, ToolCallError, finish, wait_for

#: Generous: the machine is shared by several engineers' test runs.
BOUND_SECONDS = 90.0


@pytest.fixture(scope="module")
def data_dir() -> str:
    """The stacks' own data directory: where the watch leases live (shared by this module's servers)."""
    return tempfile.mkdtemp(prefix="cbm-watch-data-")


@pytest.fixture(scope="module")
def stack(start_stack: StartStack, data_dir: str) -> Stack:
    return start_stack(env={"CODEBASE_MCP_DATA_DIR": data_dir, "CODEBASE_MCP_WATCH_DEBOUNCE_MS": "200"})


def new_repo(name: str, files: int = 30, seed: int = 1) -> Path:
    repo = Path(tempfile.mkdtemp(prefix=f"cbm-watch-{name}-")) / name
    generate_repo(repo, files, 30, seed=seed)
    return repo


def word(prefix: str) -> str:
    """A word no other file holds, letters only: digits inside a word make full-text search split it."""
    return prefix + "".join("abcdefghijklmnop"[int(digit, 16)] for digit in uuid.uuid4().hex[:12])


def module_source(token: str, functions: int = 2) -> str:
    """Python whose every function carries ``token``, a word no other file holds."""
    lines = [f'"""Module {token}."""', ""]
    for index in range(functions):
        lines += [f"def handler_{token}_{index}() -> str:", f"    return 'value {token} {index}'", ""]
    return "\n".join(lines)


async def repository(client: McpClient, path: Path) -> dict[str, Any]:
    listed = await client.call("list_repositories")
    found = [repo for repo in listed["repositories"] if repo["path"] == str(path.resolve())]
    return found[0] if found else {"watch_caught_up_at": None, "active_job_id": None, "watched": False}


async def caught_up(client: McpClient, path: Path, after: str = "") -> dict[str, Any]:
    """The repository once its watch has caught up (later than ``after``) and no job runs on it."""

    async def settled() -> dict[str, Any] | None:
        repo = await repository(client, path)
        done = (repo["watch_caught_up_at"] or "") > after and repo["active_job_id"] is None
        return repo if done else None

    return await wait_for(settled, timeout=BOUND_SECONDS, what=f"the watch of {path} to catch up")  # type: ignore[no-any-return]


async def indexed_and_watched(client: McpClient, path: Path) -> dict[str, Any]:
    """Index ``path`` with ``watch=true``; the repository once the job completed and the watch caught up."""
    started = await client.call("start_indexing_background", repo_path=str(path), watch=True)
    assert (await finish(client, started["job_id"]))["status"] == "completed"
    return await caught_up(client, path)


async def text_hits(client: McpClient, path: Path, token: str) -> list[dict[str, Any]]:
    result = await client.call("search_code", query=token, repository=str(path.resolve()), mode="text", scope="all")
    return [hit for hit in result["results"] if token in hit["snippet"]]


async def findable_after(client: McpClient, path: Path, token: str, saved_at: float, what: str) -> float:
    """Seconds from ``saved_at`` until a text search finds ``token``; printed."""

    async def found() -> bool:
        return bool(await text_hits(client, path, token))

    await wait_for(found, timeout=BOUND_SECONDS, interval=0.1, what=f"{token} to become findable")
    latency = time.perf_counter() - saved_at
    print(f"\n[watch] {what}: new text findable {latency:.2f} s after the save")
    return latency


async def jobs_of(client: McpClient, path: Path) -> list[dict[str, Any]]:
    listed = await client.call("list_indexing_jobs", repo_path=str(path.resolve()), limit=500)
    return list(reversed(listed["jobs"]))  # oldest first


async def test_a_save_is_findable_with_no_call_from_the_client(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("save")
    async with stack.client() as client:
        listed = await indexed_and_watched(client, repo)
        assert listed["watched"] is True and listed["watch_error"] is None

        # A new file, then an edit of an existing one: each findable by its words, nobody asked.
        token = word("fresh")
        (repo / "added_module.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "new file")

        edited = sorted(repo.rglob("module_*.py"))[3]
        token = word("edited")
        edited.write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "edited file")

        # A deleted file leaves the index by itself too.
        deleted_token = word("gone")
        (repo / "doomed.py").write_text(module_source(deleted_token), encoding="utf-8")
        await findable_after(client, repo, deleted_token, time.perf_counter(), "file to delete")
        (repo / "doomed.py").unlink()

        async def gone() -> bool:
            return not await text_hits(client, repo, deleted_token)

        await wait_for(gone, timeout=BOUND_SECONDS, what="the deleted file to leave the index")

        # Changes the index ignores start no job: .git/, an ignored directory, a binary file.
        await caught_up(client, repo)
        before = len(await jobs_of(client, repo))
        (repo / ".git").mkdir(exist_ok=True)
        (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
        (repo / "node_modules" / "pkg").mkdir(parents=True)
        (repo / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n", encoding="utf-8")
        (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
        time.sleep(1.0)  # five debounce times: a job these caused would be one of its own
        # Then a relevant save: its job is the only one the four changes cause.
        token = word("after")
        (repo / "after_ignored.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "save after ignored changes")
        await caught_up(client, repo)
        assert len(await jobs_of(client, repo)) == before + 1


async def test_a_burst_of_saves_during_a_job_queues_one_follow_up(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("burst", seed=2)
    async with stack.client() as client:
        await indexed_and_watched(client, repo)
        known = {job["job_id"] for job in await jobs_of(client, repo)}

        # A slow job: ten new files to embed at 150 ms per text.
        set_embed_delay(fake_embedding_url, 150)
        try:
            for index in range(10):
                (repo / f"slow_{index}.py").write_text(module_source(word("slow"), 4))

            async def running_job() -> dict[str, Any] | None:
                fresh = [job for job in await jobs_of(client, repo) if job["job_id"] not in known]
                return fresh[0] if fresh and fresh[0]["status"] == "running" else None

            first = await wait_for(running_job, timeout=BOUND_SECONDS, interval=0.05, what="the watch's job")
            # The burst: 25 saves of five files while that job runs.
            last_token = ""
            for _round in range(5):
                for index in range(5):
                    last_token = word("burst")
                    (repo / f"burst_{index}.py").write_text(module_source(last_token), encoding="utf-8")
                time.sleep(0.05)
            status = await client.call("get_indexing_status", job_id=first["job_id"])
            assert status["status"] == "running", "the job ended before the burst: make it slower"
        finally:
            set_embed_delay(fake_embedding_url, 0)
        await findable_after(client, repo, last_token, time.perf_counter(), "last save of the burst")
        await caught_up(client, repo)
        jobs = [job for job in await jobs_of(client, repo) if job["job_id"] not in known]
        print(f"\n[watch] jobs after the burst: {[(job['status'], job['files_total']) for job in jobs]}")
        assert [job["job_id"] for job in jobs][0] == first["job_id"]
        assert len(jobs) == 2, jobs  # the running one and exactly one follow-up
        assert all(job["status"] == "completed" for job in jobs)
        follow_up = jobs[1]
        assert follow_up["created_at"] >= status["created_at"]


async def test_the_watch_survives_a_restart_and_catches_up(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("restart", seed=3)
    async with stack.client() as client:
        before = await indexed_and_watched(client, repo)
    stack.kill_server(signal.SIGKILL)
    # Saved while no server runs: only the next server's catch-up can find it.
    token = word("offline")
    (repo / "while_down.py").write_text(module_source(token), encoding="utf-8")
    saved = time.perf_counter()
    stack.start_server()
    async with stack.client() as client:
        await findable_after(client, repo, token, saved, "saved while the server was down (incl. its restart)")
        after = await caught_up(client, repo, before["watch_caught_up_at"])
        assert after["watched"] is True and after["watch_error"] is None
        # And it goes on watching.
        token = word("online")
        (repo / "after_restart.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "after the restart")


async def test_one_server_watches_and_another_takes_over(
    stack: Stack, start_stack: StartStack, data_dir: str, fake_embedding_url: str
) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("takeover", seed=4)
    async with stack.client() as client:
        await indexed_and_watched(client, repo)
    # A second server on the same vhost and database (and its own workers).
    other = start_stack(env={**stack.env, "CODEBASE_MCP_DATA_DIR": data_dir})
    settings = Settings(
        database_url=stack.env["CODEBASE_MCP_DATABASE_URL"],
        broker_url=stack.env["CODEBASE_MCP_BROKER_URL"],
        data_dir=Path(data_dir),
    )
    lease = watch_lease(settings, str(repo.resolve()))
    assert stack.server is not None and other.server is not None
    assert lease.owner_pid() == stack.server.pid, "the first server holds the watch"
    assert not lease.try_acquire(), "the lease is held"
    async with other.client() as client:
        before = len(await jobs_of(client, repo))
        token = word("both")
        (repo / "both_alive.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "two servers")
        await caught_up(client, repo)
        assert len(await jobs_of(client, repo)) == before + 1, "one server watched, not two"

        stack.kill_server(signal.SIGKILL)
        token = word("taken")
        (repo / "taken_over.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "after the watching server died")
        await wait_for(
            lambda: _async_value(lease.owner_pid() == other.server.pid),  # type: ignore[union-attr]
            timeout=BOUND_SECONDS,
            what="the second server to hold the lease",
        )
    stack.start_server()


async def _async_value(value: bool) -> bool:
    return value


async def test_unwatch_stops_the_watch(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    quiet, control = new_repo("unwatched", seed=5), new_repo("control", seed=6)
    async with stack.client() as client:
        for repo in (quiet, control):
            started = await client.call("start_indexing_background", repo_path=str(repo))
            await finish(client, started["job_id"])
            answer = await client.call("watch_repository", repository=str(repo))
            assert answer["watched"] is True and answer["changed"] is True
        for repo in (quiet, control):
            await caught_up(client, repo)
        again = await client.call("watch_repository", repository=str(quiet))
        assert again["changed"] is False
        answer = await client.call("unwatch_repository", repository=str(quiet))
        assert answer == {**answer, "watched": False, "changed": True}
        assert (await repository(client, quiet))["watched"] is False
        jobs_before = len(await jobs_of(client, quiet))

        # Saved in both at once: the control repository's job proves a watch would have reacted.
        quiet_token, control_token = word("quiet"), word("control")
        (quiet / "saved.py").write_text(module_source(quiet_token), encoding="utf-8")
        (control / "saved.py").write_text(module_source(control_token), encoding="utf-8")
        await findable_after(client, control, control_token, time.perf_counter(), "control repository")
        await caught_up(client, control)
        assert len(await jobs_of(client, quiet)) == jobs_before
        assert not await text_hits(client, quiet, quiet_token)


async def test_search_hits_of_changed_files_are_marked_stale(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("stale", seed=7)
    token = word("stale")
    for name in ("kept.py", "edited.py", "resized.py", "deleted.py", "escaped.py"):
        (repo / name).write_text(module_source(token), encoding="utf-8")
    async with stack.client() as client:  # not watched: the index stays as it was
        started = await client.call("start_indexing_background", repo_path=str(repo))
        await finish(client, started["job_id"])

        async def marks() -> dict[str, bool | None]:
            return {hit["file_path"]: hit["stale"] for hit in await text_hits(client, repo, token)}

        assert await marks() == dict.fromkeys(("kept.py", "edited.py", "resized.py", "deleted.py", "escaped.py"), False)
        original = (repo / "edited.py").read_text(encoding="utf-8")
        (repo / "edited.py").write_text(original.replace("value", "VALUE"), encoding="utf-8")  # same size
        (repo / "resized.py").write_text(original + "\n# more\n", encoding="utf-8")
        (repo / "deleted.py").unlink()
        # Replaced by a symlink out of the repository: the server will not read it, so it cannot tell.
        outside = Path(tempfile.mkdtemp(prefix="cbm-watch-outside-")) / "escaped.py"
        outside.write_text(original.replace("value", "other"), encoding="utf-8")
        (repo / "escaped.py").unlink()
        (repo / "escaped.py").symlink_to(outside)
        # A save that restores the bytes is not stale.
        (repo / "kept.py").write_text(original, encoding="utf-8")
        assert await marks() == {
            "kept.py": False,
            "edited.py": True,
            "resized.py": True,
            "deleted.py": True,
            "escaped.py": None,
        }


async def test_bad_watch_requests_say_what_is_wrong(stack: Stack) -> None:
    never_indexed = Path(tempfile.mkdtemp(prefix="cbm-watch-never-"))
    a_file = never_indexed / "file.py"
    a_file.write_text("x = 1\n", encoding="utf-8")
    async with stack.client() as client:
        with pytest.raises(ToolCallError, match=r"not found.*start_indexing_background\(repo_path, watch=true\)"):
            await client.call("watch_repository", repository=str(never_indexed))
        with pytest.raises(ToolCallError, match="is not a directory"):
            await client.call("start_indexing_background", repo_path=str(a_file), watch=True)
        with pytest.raises(ToolCallError, match="not found"):
            await client.call("unwatch_repository", repository="no-such-repository")

        # Indexed, then its directory moved away: watching it cannot work, and the error says why.
        repo = new_repo("moved", files=5, seed=8)
        started = await client.call("start_indexing_background", repo_path=str(repo))
        await finish(client, started["job_id"])
        repo.rename(repo.with_name("moved-elsewhere"))
        with pytest.raises(ToolCallError, match=r"cannot watch moved: repository path .* not found"):
            await client.call("watch_repository", repository=str(repo))
        assert (await repository(client, repo))["watched"] is False
        repo.with_name("moved-elsewhere").rename(repo)
        assert (await client.call("watch_repository", repository="moved"))["watched"] is True
        await caught_up(client, repo)
        answer = await client.call("unwatch_repository", repository="moved")
        assert answer["watched"] is False


def _collect(stream: IO[bytes], lines: list[str]) -> None:
    # extend() appends line by line as the pipe delivers them, so the test sees each at once.
    lines.extend(raw.decode("utf-8", "replace") for raw in stream)


async def test_cli_index_watch_keeps_running_and_reindexes_on_save(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("cli", files=10, seed=9)
    command = [str(BIN / "codebase-mcp"), "index", str(repo), "--watch", "--workers", "never"]
    process = subprocess.Popen(
        command,
        env={**stack.env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, out), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()

    async def printed(lines: list[str], text: str) -> bool:
        assert process.poll() is None, f"index --watch exited: {''.join(err)}"
        return any(text in line for line in lines)

    try:
        # The first job ended and the command went on watching.
        await wait_for(lambda: printed(err, f"watching {repo.resolve()}"), timeout=BOUND_SECONDS, what="watching")
        async with stack.client() as client:
            assert (await repository(client, repo))["watched"] is True
            await caught_up(client, repo)
            reported = sum("completed: " in line for line in out)
            token = word("cli")
            (repo / "from_cli.py").write_text(module_source(token), encoding="utf-8")
            await findable_after(client, repo, token, time.perf_counter(), "index --watch")

            # The job the save caused is reported, whichever process ran the watch.
            async def reported_more() -> bool:
                return await printed(out, "") and sum("completed: " in line for line in out) > reported

            await wait_for(reported_more, timeout=BOUND_SECONDS, what="the CLI to report the job")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        for reader in readers:
            reader.join(timeout=10)
    assert process.returncode == 0, "".join(err)
    assert any("stays watched" in line for line in err), err


async def test_a_vanished_directory_is_reported_and_the_watch_resumes(stack: Stack, fake_embedding_url: str) -> None:
    set_embed_delay(fake_embedding_url, 0)
    repo = new_repo("vanishing", files=5, seed=10)
    away = repo.with_name("vanishing-away")
    async with stack.client() as client:
        await indexed_and_watched(client, repo)
        repo.rename(away)

        async def reported() -> str | None:
            return (await repository(client, repo))["watch_error"]  # type: ignore[no-any-return]

        error = await wait_for(reported, timeout=BOUND_SECONDS, what="watch_error")
        print(f"\n[watch] watch_error: {error}")
        assert str(repo) in error and ("not found" in error or "no longer a directory" in error), error
        assert (await repository(client, repo))["watched"] is True

        away.rename(repo)
        token = word("back")
        (repo / "back.py").write_text(module_source(token), encoding="utf-8")
        await findable_after(client, repo, token, time.perf_counter(), "directory back in place")

        async def cleared() -> bool:
            return (await reported()) is None

        await wait_for(cleared, timeout=BOUND_SECONDS, what="watch_error to clear")
