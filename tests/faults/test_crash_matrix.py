"""The crash matrix (``-m faults``): break each part of the running stack mid-job, lose nothing.

Real processes, real RabbitMQ and PostgreSQL, nothing mocked. Per case:

- workers of one pipeline stage (chunk, embed, write, coordinate) are SIGKILLed at random moments
  while they hold work, ``KILLS_PER_STAGE`` times in one job, and restarted;
- the MCP server is SIGKILLed while jobs are running, pending and being cancelled;
- a private RabbitMQ node is stopped and started again mid-job;
- the PostgreSQL cluster is restarted mid-job;
- the embedding service is down for a while (the job blocks, then resumes) and for good (the job
  fails naming the service, and a later request for the repository works).

Every job that is not cancelled must end ``completed`` with every file indexed exactly once, no
duplicate chunk row, and counters equal to a fresh count from the database. Resume time and
duplicate work are printed per case (and recorded in ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Db, Postgres, RabbitNode
from tests.fixtures.fake_embedding_server import control
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, TERMINAL, Stack, ToolCallError, wait_for

pytestmark = pytest.mark.faults

KILLS_PER_STAGE = 10
#: Big enough that a job outlives ten kill-and-restart rounds of one stage.
REPO_FILES = 600
REPO_LINES = 40
EMBED_DELAY_MS_PER_TEXT = 15.0
BLOCKED_TIMEOUT = 15


@dataclass(frozen=True)
class Stage:
    queues: tuple[str, ...]
    #: Ledger figure that grows when the stage does work, and the batch state it consumes.
    progress: str
    input_state: str
    #: The text phase runs ahead of the vectors and is over in a few seconds, so the stages that
    #: serve only it need a larger repository to still hold work at the tenth kill.
    files: int = REPO_FILES


#: Two phases (issue 12): chunk → write → coordinate (text recorded: searchable) → embed →
#: coordinate (vectors recorded). The coordinator consumes batches in both ``written`` and ``embedded``.
STAGES = {
    "chunk": Stage(("index.chunk",), "chunk_runs", "queued", files=1000),
    "write": Stage(("index.write",), "write_runs", "chunked", files=1000),
    "embed": Stage(("index.embed",), "embed_runs", "searchable"),
    "coordinate": Stage(("index.coordinate", "index.plan"), "recorded", "to_record"),
}


@dataclass
class Outcome:
    case: str
    resume_seconds: list[float]
    duplicate_files_pct: float
    duplicate_texts_pct: float
    files_lost: int
    duplicate_chunks: int
    note: str = ""


RESULTS: list[Outcome] = []


@dataclass
class StageStack(Stack):
    """The server plus one worker group per pipeline stage, each its own process group to kill."""

    groups: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_group(self, name: str) -> None:
        self.groups[name] = self._spawn(
            f"workers-{name}",
            [str(BIN / "dramatiq"), "actors.worker", "--processes", "1", "--threads", "2", "-Q", *STAGES[name].queues],
            {"dramatiq_queue_prefetch": "2"},
        )

    def kill_group(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self._kill(self.groups.get(name), sig)

    def start_workers(self) -> None:
        for name in STAGES:
            self.start_group(name)

    def kill_workers(self, sig: signal.Signals = signal.SIGKILL) -> None:
        for name in STAGES:
            self.kill_group(name, sig)

    def stop(self) -> None:
        # SIGKILL: after a crash matrix there is nothing a graceful shutdown would save.
        self.kill_workers(signal.SIGKILL)
        self.kill_server(signal.SIGKILL)


def stack_env(base: dict[str, str], *, database_url: str, broker_url: str, embedding_url: str) -> dict[str, str]:
    env = {key: value for key, value in base.items() if not key.startswith("CODEBASE_MCP_")}
    env.update(
        {
            "CODEBASE_MCP_DATABASE_URL": database_url,
            "CODEBASE_MCP_BROKER_URL": broker_url,
            "CODEBASE_MCP_EMBEDDER": "ollama",
            "CODEBASE_MCP_OLLAMA_URL": embedding_url,
            "CODEBASE_MCP_OLLAMA_MODEL": "fake-deterministic",
            "CODEBASE_MCP_OLLAMA_DIMENSION": "384",
            "CODEBASE_MCP_EMBED_RETRY_BASE_SECONDS": "0.2",
            # Small batches: many ledger hops per job, so kills land on every kind of hop.
            "CODEBASE_MCP_BATCH_SIZE": "5",
            "CODEBASE_MCP_BATCHES_IN_FLIGHT": "4",
            "CODEBASE_MCP_MAX_CONCURRENT_JOBS": "2",
            "CODEBASE_MCP_BLOCKED_TIMEOUT_SECONDS": str(BLOCKED_TIMEOUT),
            "CODEBASE_MCP_LOG_LEVEL": "INFO",
            "dramatiq_prom_db": tempfile.mkdtemp(prefix="cbm-faults-prom-"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def stage_stack(
    base_env: dict[str, str], faults_pg: Postgres, make_vhost: Any, fake_embedding_url: str
) -> Iterator[StageStack]:
    env = stack_env(base_env, database_url=faults_pg.url, broker_url=make_vhost(), embedding_url=fake_embedding_url)
    running = StageStack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-faults-logs-")))
    running.start_workers()
    running.start_server()
    print(f"\nfaults stack logs: {running.log_dir}")
    yield running
    running.stop()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """Print the matrix's figures once every case ran (the table in docs/reliability.md)."""
    yield
    if not RESULTS:
        return
    lines = [
        "",
        "| case | resume s (mean / max) | duplicate files % | duplicate texts % | files lost | duplicate chunks |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in RESULTS:
        times = outcome.resume_seconds
        resume = f"{sum(times) / len(times):.1f} / {max(times):.1f}" if times else "-"
        lines.append(
            f"| {outcome.case} | {resume} | {outcome.duplicate_files_pct:.2f} | {outcome.duplicate_texts_pct:.2f} "
            f"| {outcome.files_lost} | {outcome.duplicate_chunks} |" + (f" {outcome.note}" if outcome.note else "")
        )
    print("\n".join(lines))


# --- helpers ----------------------------------------------------------------------------------------


def embedder_working(url: str) -> None:
    """The test embedding server answering again at the matrix's pace, its counters at zero."""
    control(url, {"delay_ms_per_text": EMBED_DELAY_MS_PER_TEXT, "fail": False, "reset_stats": True})


def make_repo(root: Path, seed: int, files: int = REPO_FILES) -> Path:
    """A fresh repository: its own seed, so that no text is already in the embedding cache."""
    path = root / f"repo-{seed}"
    generate_repo(path, files, REPO_LINES, seed=seed)
    return path


def source_files(repo: Path) -> set[str]:
    return {str(path.relative_to(repo)) for path in repo.rglob("*.py")}


async def progress(db: Db, job_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT j.status, coalesce(sum(b.chunk_runs), 0)::int AS chunk_runs, "
        "coalesce(sum(b.embed_runs), 0)::int AS embed_runs, coalesce(sum(b.write_runs), 0)::int AS write_runs, "
        "count(*) FILTER (WHERE b.state = 'recorded')::int AS recorded, "
        "count(*) FILTER (WHERE b.state = 'queued')::int AS queued, "
        "count(*) FILTER (WHERE b.state = 'chunked')::int AS chunked, "
        "count(*) FILTER (WHERE b.state = 'written')::int AS written, "
        "count(*) FILTER (WHERE b.state = 'searchable')::int AS searchable, "
        "count(*) FILTER (WHERE b.state = 'embedded')::int AS embedded, "
        "count(*) FILTER (WHERE b.state IN ('written', 'embedded'))::int AS to_record "
        "FROM indexing_jobs j LEFT JOIN index_batches b ON b.job_id = j.id WHERE j.id = $1 GROUP BY j.status",
        uuid.UUID(job_id),
    )
    return dict(row)


async def wait_moved(db: Db, job_id: str, figure: str, beyond: int, *, timeout: float = 120) -> dict[str, Any]:
    """Until the ledger figure grows past ``beyond`` (or the job ends); returns the last reading."""

    async def moved() -> dict[str, Any] | None:
        now = await progress(db, job_id)
        return now if now[figure] > beyond or now["status"] in TERMINAL else None

    result: dict[str, Any] = await wait_for(moved, timeout=timeout, interval=0.05, what=f"{figure} > {beyond}")
    return result


async def wait_holding(db: Db, job_id: str, state: str) -> dict[str, Any]:
    """Until some batch of the job is in ``state`` (or the job ends); returns that reading."""

    async def holding() -> dict[str, Any] | None:
        now = await progress(db, job_id)
        return now if now[state] > 0 or now["status"] in TERMINAL else None

    result: dict[str, Any] = await wait_for(holding, timeout=60, interval=0.02, what=f"a batch {state}")
    return result


async def start_job(stack: Stack, repo: Path, name: str) -> str:
    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name=name)
    return str(started["job_id"])


async def job_status(db: Db, job_id: str) -> str | None:
    status = await db.fetchval("SELECT status FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    return None if status is None else str(status)


async def wait_terminal(db: Db, job_id: str, *, timeout: float = 600) -> str:
    async def ended() -> str | None:
        status = await job_status(db, job_id)
        return status if status in TERMINAL else None

    result: str = await wait_for(ended, timeout=timeout, interval=0.2, what=f"job {job_id} to end")
    return result


async def verify_completed(db: Db, job_id: str, repo: Path) -> tuple[int, int]:
    """The job completed; each file is stored once, no chunk twice, counters equal fresh counts.

    Returns (files lost, duplicate chunk rows), both asserted to be 0.
    """
    job = await db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    assert job["status"] == "completed", dict(job)
    on_disk = source_files(repo)
    stored = {
        row["path"] for row in await db.fetch("SELECT path FROM files WHERE repository_id = $1", job["repository_id"])
    }
    rows = await db.fetchval("SELECT count(*) FROM files WHERE repository_id = $1", job["repository_id"])
    lost = len(on_disk - stored)
    assert lost == 0 and stored == on_disk and rows == len(on_disk), (lost, rows, len(on_disk))
    duplicate_chunks = await db.fetchval(
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM chunks WHERE repository_id = $1 "
        "GROUP BY file_id, ordinal HAVING count(*) > 1) d",
        job["repository_id"],
    )
    gaps = await db.fetchval(
        "SELECT count(*) FROM (SELECT file_id FROM chunks WHERE repository_id = $1 GROUP BY file_id "
        "HAVING max(ordinal) + 1 <> count(*)) g",
        job["repository_id"],
    )
    assert duplicate_chunks == 0 and gaps == 0, (duplicate_chunks, gaps)
    fresh = await db.fetchrow(
        "SELECT (SELECT count(*) FROM files WHERE job_id = $1) AS files, "
        "(SELECT count(*) FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.job_id = $1) AS chunks, "
        "(SELECT count(*) FROM index_batches WHERE job_id = $1 AND state = 'recorded') AS recorded, "
        "(SELECT count(*) FROM index_batches WHERE job_id = $1) AS batches",
        job["id"],
    )
    # Files the index already held unchanged (a retry after a failed job) are not indexed again.
    assert job["files_total"] == job["files_indexed"] == fresh["files"], (dict(job), dict(fresh))
    assert job["files_total"] + job["files_unchanged"] == len(on_disk), dict(job)
    assert job["chunks_created"] == fresh["chunks"], (job["chunks_created"], fresh["chunks"])
    assert job["batches_done"] == job["batches_total"] == fresh["recorded"] == fresh["batches"], dict(fresh)
    assert job["files_failed"] == 0 and job["progress_percentage"] == 100
    # Both phases done: every chunk has exactly one vector (the column holds one), none is missing.
    without = await db.fetchval(
        "SELECT count(*) FROM chunks WHERE repository_id = $1 AND embedding IS NULL", job["repository_id"]
    )
    assert without == 0 and job["chunks_embedded"] == job["chunks_created"], (without, dict(job))
    return lost, int(duplicate_chunks)


async def duplicate_work(db: Db, job_id: str, embedding_url: str) -> tuple[float, float]:
    """(files whose batch entered the embed stage again, texts the embedder computed beyond the
    distinct texts the job needed), both in %. Call after ``reset_stats`` at the job's start."""
    row = await db.fetchrow(
        "SELECT sum(file_count) AS files, sum(greatest(embed_runs - 1, 0) * file_count) AS again "
        "FROM index_batches WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    needed = await db.fetchval(
        "SELECT count(DISTINCT md5(c.header || chr(10) || c.content)) FROM chunks c "
        "JOIN files f ON f.id = c.file_id WHERE f.job_id = $1",
        uuid.UUID(job_id),
    )
    served = int(control(embedding_url, {})["texts"])
    files_pct = 100.0 * float(row["again"] or 0) / max(float(row["files"] or 0), 1.0)
    texts_pct = 100.0 * max(served - int(needed), 0) / max(int(needed), 1)
    return files_pct, texts_pct


async def finish_case(
    case: str, db: Db, job_id: str, repo: Path, embedding_url: str, resume: list[float], note: str = ""
) -> Outcome:
    status = await wait_terminal(db, job_id)
    assert status == "completed", f"{case}: job ended {status}"
    lost, duplicates = await verify_completed(db, job_id, repo)
    files_pct, texts_pct = await duplicate_work(db, job_id, embedding_url)
    outcome = Outcome(case, resume, files_pct, texts_pct, lost, duplicates, note)
    RESULTS.append(outcome)
    print(
        f"\n{case}: resume {', '.join(f'{s:.1f}' for s in resume)} s, duplicate work {files_pct:.2f}% of files "
        f"re-embedded, {texts_pct:.2f}% extra texts; files lost {lost}, duplicate chunks {duplicates}. {note}"
    )
    return outcome


# --- worker processes -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGES))
async def test_sigkill_worker_of_each_stage(
    stage: str, stage_stack: StageStack, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    seed = random.SystemRandom().randrange(1_000_000)
    rng = random.Random(seed)
    spec = STAGES[stage]
    repo = make_repo(tmp_path, 1000 + list(STAGES).index(stage), files=spec.files)
    embedder_working(fake_embedding_url)
    job_id = await start_job(stage_stack, repo, f"kill-{stage}")
    resume: list[float] = []
    holding = 0
    await wait_moved(faults_db, job_id, spec.progress, 0)
    for _ in range(KILLS_PER_STAGE):
        # A random moment while the stage works (its figure just moved) and holds work (a batch in
        # the state it consumes, so its message is queued or in its hands): SIGKILL its processes.
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        before = await wait_holding(faults_db, job_id, spec.input_state)
        assert before["status"] == "running", f"job ended after {len(resume)} kills of {stage}: repository too small"
        stage_stack.kill_group(stage)
        holding += before[spec.input_state] > 0
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        # Read after the pause: a commit the dying process had already sent may still land.
        at_kill = (await progress(faults_db, job_id))[spec.progress]
        restarted = time.monotonic()
        stage_stack.start_group(stage)
        await wait_moved(faults_db, job_id, spec.progress, at_kill)
        resume.append(time.monotonic() - restarted)
    assert len(resume) == KILLS_PER_STAGE and holding == KILLS_PER_STAGE, (resume, holding)
    await finish_case(
        f"SIGKILL {stage} workers x{KILLS_PER_STAGE}",
        faults_db,
        job_id,
        repo,
        fake_embedding_url,
        resume,
        note=f"(seed {seed}; resume includes the worker process's start)",
    )


# --- the MCP server ---------------------------------------------------------------------------------


async def _cancel_while_killing(stack: StageStack, job_id: str, delay: float) -> str:
    """Send a cancel and SIGKILL the server ``delay`` s later; returns what the client saw."""
    async with stack.client() as client:
        call = asyncio.create_task(client.call("cancel_indexing_background", job_id=job_id))
        await asyncio.sleep(delay)
        stack.kill_server(signal.SIGKILL)
        try:
            answer = await asyncio.wait_for(call, timeout=10)
            return f"answered {answer['status']}"
        except (Exception, BaseExceptionGroup) as error:  # the connection died with the server
            return f"no answer ({type(error).__name__})"


async def test_sigkill_server_with_running_pending_and_cancelling_jobs(
    stage_stack: StageStack, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    rng = random.Random()
    embedder_working(fake_embedding_url)
    repos = [make_repo(tmp_path, 2000 + index, files=200) for index in range(4)]
    ids = [await start_job(stage_stack, repo, f"server-{index}") for index, repo in enumerate(repos)]
    statuses = [await job_status(faults_db, i) for i in ids]
    assert statuses == ["running", "running", "pending", "pending"], statuses  # MAX_CONCURRENT_JOBS = 2
    running, cancelled, pending = ids[0], ids[1], ids[2:]
    await wait_moved(faults_db, running, "recorded", 2)
    await wait_moved(faults_db, cancelled, "recorded", 0)
    seen = "no answer (the client hung up)"
    with contextlib.suppress(Exception, BaseExceptionGroup):
        seen = await asyncio.wait_for(_cancel_while_killing(stage_stack, cancelled, rng.uniform(0.0, 0.25)), 60)
    assert stage_stack.server is not None and stage_stack.server.poll() is not None
    # The workers do not need the server: the running job moves on while it is down.
    at_kill = await progress(faults_db, running)
    await wait_moved(faults_db, running, "recorded", at_kill["recorded"], timeout=60)
    restarted = time.monotonic()
    stage_stack.start_server()
    ready = time.monotonic() - restarted
    async with stage_stack.client() as client:
        status = await client.call("get_indexing_status", job_id=cancelled)
        first_cancel = status["status"]
        if status["status"] != "cancelled":
            # The kill beat the cancel's commit: the client got no answer and asks again.
            status = await client.call("cancel_indexing_background", job_id=cancelled)
        assert status["status"] == "cancelled", status
        with pytest.raises(ToolCallError, match="cannot cancel"):
            await client.call("cancel_indexing_background", job_id=cancelled)
    for job_id, repo in zip([running, *pending], [repos[0], *repos[2:]], strict=True):
        assert await wait_terminal(faults_db, job_id) == "completed"
        await verify_completed(faults_db, job_id, repo)
    await verify_cancelled(faults_db, cancelled)
    files_pct, texts_pct = await duplicate_work(faults_db, running, fake_embedding_url)
    outcome = Outcome(
        "SIGKILL MCP server (running, pending, cancelling)",
        [ready],
        files_pct,
        0.0,
        0,
        0,
        note=f"(resume = server process start to ready; the running job moved on while the server was down; "
        f"cancel sent as the server died: {first_cancel} after restart, client saw {seen})",
    )
    RESULTS.append(outcome)
    print(f"\n{outcome.case}: server ready {ready:.1f} s after restart, {files_pct:.2f}% re-embedded. {outcome.note}")


async def verify_cancelled(db: Db, job_id: str) -> None:
    """A cancelled job stays cancelled and its counters equal what it stored, once written batches are recorded."""

    async def settled() -> bool:
        return not await db.fetchval(
            "SELECT count(*) FROM index_batches WHERE job_id = $1 AND state = 'written'", uuid.UUID(job_id)
        )

    await wait_for(settled, timeout=60, what="written batches of the cancelled job recorded")
    job = await db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    fresh = await db.fetchrow(
        "SELECT (SELECT count(*) FROM files WHERE job_id = $1) AS files, "
        "(SELECT count(*) FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.job_id = $1) AS chunks",
        job["id"],
    )
    assert job["status"] == "cancelled" and job["completed_at"] is None, dict(job)
    assert job["files_indexed"] == fresh["files"] and job["chunks_created"] == fresh["chunks"], (
        dict(job),
        dict(fresh),
    )


# --- RabbitMQ -----------------------------------------------------------------------------------------


@pytest.fixture
def rabbit_stack(
    base_env: dict[str, str], faults_pg: Postgres, private_rabbitmq: RabbitNode, fake_embedding_url: str
) -> Iterator[Stack]:
    env = stack_env(
        base_env, database_url=faults_pg.url, broker_url=private_rabbitmq.url, embedding_url=fake_embedding_url
    )
    running = Stack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-faults-rabbit-logs-")))
    running.start_workers()
    running.start_server()
    print(f"\nrabbitmq case logs: {running.log_dir}")
    yield running
    running.kill_workers(signal.SIGKILL)
    running.kill_server(signal.SIGKILL)


async def test_rabbitmq_stopped_and_restarted_mid_job(
    rabbit_stack: Stack, private_rabbitmq: RabbitNode, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    embedder_working(fake_embedding_url)
    repo = make_repo(tmp_path, 3000)
    job_id = await start_job(rabbit_stack, repo, "rabbitmq")
    await wait_moved(faults_db, job_id, "recorded", 20)
    private_rabbitmq.stop()
    stopped = time.monotonic()
    at_stop = await progress(faults_db, job_id)
    # The server still answers status from the database while the broker is away.
    async with rabbit_stack.client() as client:
        status = await client.call("get_indexing_status", job_id=job_id)
        assert status["status"] == "running", status
    await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - stopped)))
    down = time.monotonic() - stopped
    boot = private_rabbitmq.start()
    back = time.monotonic()
    await wait_moved(faults_db, job_id, "recorded", at_stop["recorded"], timeout=180)
    resumed = time.monotonic() - back
    await finish_case(
        "RabbitMQ node stopped and restarted",
        faults_db,
        job_id,
        repo,
        fake_embedding_url,
        [resumed],
        note=f"(broker down {down:.1f} s + {boot:.1f} s boot; resume counted from the broker's return)",
    )
    # The server's own publisher reconnected too: a new job after the restart is planned and runs.
    second_repo = make_repo(tmp_path, 3001, files=40)
    second = await start_job(rabbit_stack, second_repo, "after-rabbitmq")
    assert await wait_terminal(faults_db, second) == "completed"
    await verify_completed(faults_db, second, second_repo)
    assert rabbit_stack.server is not None and rabbit_stack.server.poll() is None
    assert rabbit_stack.workers is not None and rabbit_stack.workers.poll() is None


# --- PostgreSQL ---------------------------------------------------------------------------------------


async def test_postgresql_restarted_mid_job(
    stage_stack: StageStack, faults_pg: Postgres, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    embedder_working(fake_embedding_url)
    repo = make_repo(tmp_path, 4000)
    job_id = await start_job(stage_stack, repo, "postgres")
    at_stop = await wait_moved(faults_db, job_id, "recorded", 20)
    await asyncio.to_thread(faults_pg.stop)
    stopped = time.monotonic()
    await asyncio.sleep(5)
    await asyncio.to_thread(faults_pg.start)
    down = time.monotonic() - stopped
    back = time.monotonic()
    await wait_moved(faults_db, job_id, "recorded", at_stop["recorded"], timeout=180)
    resumed = time.monotonic() - back
    await finish_case(
        "PostgreSQL restarted",
        faults_db,
        job_id,
        repo,
        fake_embedding_url,
        [resumed],
        note=f"(database down {down:.1f} s; resume counted from its return)",
    )
    # The server's pool reconnected as well: its tools answer.
    async with stage_stack.client() as client:
        assert (await client.call("get_indexing_status", job_id=job_id))["status"] == "completed"


# --- the embedding service -----------------------------------------------------------------------------


async def test_embedding_service_down_for_a_while_blocks_then_resumes(
    stage_stack: StageStack, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    embedder_working(fake_embedding_url)
    repo = make_repo(tmp_path, 5000, files=200)
    job_id = await start_job(stage_stack, repo, "embedder-blip")
    await wait_moved(faults_db, job_id, "recorded", 5)
    control(fake_embedding_url, {"fail": True})
    try:

        async def blocked() -> bool:
            status = await job_status(faults_db, job_id)
            assert status not in TERMINAL, status
            return status == "blocked"

        await wait_for(blocked, timeout=60, what="job blocked")
        await asyncio.sleep(BLOCKED_TIMEOUT / 3)
        assert await blocked(), "blocked job did not stay blocked"
    finally:
        control(fake_embedding_url, {"fail": False})
    back = time.monotonic()

    async def running_again() -> bool:
        status = await job_status(faults_db, job_id)
        return status in ("running", "completed")

    await wait_for(running_again, timeout=60, interval=0.05, what="job running again")
    resumed = time.monotonic() - back
    await finish_case(
        "embedding service down for a while",
        faults_db,
        job_id,
        repo,
        fake_embedding_url,
        [resumed],
        note=f"(blocked, then running again; BLOCKED_TIMEOUT_SECONDS={BLOCKED_TIMEOUT})",
    )
    events = [
        row["event"]
        for row in await faults_db.fetch(
            "SELECT event FROM job_events WHERE job_id = $1 ORDER BY id", uuid.UUID(job_id)
        )
    ]
    assert events.index("blocked") < events.index("resumed") < events.index("completed"), events


async def test_embedding_service_down_for_good_fails_then_retry_works(
    stage_stack: StageStack, faults_db: Db, fake_embedding_url: str, tmp_path: Path
) -> None:
    embedder_working(fake_embedding_url)
    repo = make_repo(tmp_path, 6000, files=100)
    job_id = await start_job(stage_stack, repo, "embedder-gone")
    await wait_moved(faults_db, job_id, "recorded", 2)
    control(fake_embedding_url, {"fail": True})
    try:
        status = await wait_terminal(faults_db, job_id, timeout=BLOCKED_TIMEOUT + 120)
        job = await faults_db.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    finally:
        control(fake_embedding_url, {"fail": False})
    assert status == "failed", dict(job)
    assert "embedding service (ollama:fake-deterministic)" in job["error_message"], job["error_message"]
    assert fake_embedding_url in job["error_message"], job["error_message"]
    # Nothing half-written: what the failed job stored is what its counters say.
    fresh = await faults_db.fetchval("SELECT count(*) FROM files WHERE job_id = $1", job["id"])
    assert fresh == job["files_indexed"], (fresh, job["files_indexed"])
    started = time.monotonic()
    control(fake_embedding_url, {"reset_stats": True})
    retry = await start_job(stage_stack, repo, "embedder-back")
    assert retry != job_id
    assert await wait_terminal(faults_db, retry) == "completed"
    took = time.monotonic() - started
    failed_after = (job["failed_at"] - job["started_at"]).total_seconds()
    await finish_case(
        "embedding service down for good, then a new request",
        faults_db,
        retry,
        repo,
        fake_embedding_url,
        [],
        note=f"(the job failed {failed_after:.0f} s after its start, naming the service; "
        f"the new request completed in {took:.1f} s)",
    )


@pytest.fixture(autouse=True)
async def embedder_restored(fake_embedding_url: str) -> AsyncIterator[None]:
    yield
    control(fake_embedding_url, {"fail": False})
