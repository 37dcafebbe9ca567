"""Metrics on the real stack: the server's ``/metrics`` and the workers' Dramatiq exporter during a job.

Two worker processes write their metrics to their own multiprocess directory and Dramatiq's
exposition process (on a free ``dramatiq_prom_port``) sums them: the file and chunk counters must
equal what the job itself recorded, which they can only do if every process's values arrive.
Every metric the README documents must show up in one of the two scrapes.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from mcp import Client, StdioServerParameters
from prometheus_client.parser import text_string_to_metric_families

from models.lifecycle import TERMINAL_STATUSES
from tests.fixtures.fake_embedding_server import set_embed_delay
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, REPO_ROOT, Stack, ToolCallError, free_port, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[set[str], Samples]:
    """Family and sample names, and every sample's value keyed by (name, labels)."""
    with urllib.request.urlopen(url, timeout=15) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=15) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``; fails when there is none,
    so that ``>= 0`` checks a real value rather than a missing one."""
    wanted = set(labels.items())
    found = [v for (n, have), v in samples.items() if n == name and wanted <= have]
    assert found, f"no sample {name} {labels or ''}"
    return sum(found)


def documented_metrics() -> set[str]:
    """First column of the README's metrics table (ours and Dramatiq's; RabbitMQ's are its own)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `((?:codebase_mcp|dramatiq)_[a-z_]+)` \|", section, flags=re.MULTILINE))


#: Dramatiq counts these only once such an event happened (no error, retry or delay in this job).
DRAMATIQ_ON_EVENT = {
    "dramatiq_message_errors_total",
    "dramatiq_message_retries_total",
    "dramatiq_message_rejects_total",
    "dramatiq_delayed_messages_inprogress",
}


# Module-wide: the first test (file order) counts on these workers having run no job before it.
@pytest.fixture(scope="module")
def metrics_stack(base_env: dict[str, str]) -> Iterator[Stack]:
    # A fresh multiprocess directory: the session's one holds counters of other tests' workers.
    env = {
        **base_env,
        "dramatiq_prom_db": tempfile.mkdtemp(prefix="cbm-test-prom-metrics-"),
        "dramatiq_prom_port": str(free_port()),
        "CODEBASE_MCP_BATCH_SIZE": "20",
        "CODEBASE_MCP_LOG_JSON": "true",
    }
    running = Stack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-metrics-logs-")), worker_threads=2)
    running.start_workers()
    running.start_server()
    yield running
    running.stop()


async def test_metrics_during_a_real_job(metrics_stack: Stack, db: asyncpg.Pool, fake_embedding_url: str) -> None:
    stack = metrics_stack
    server_url = f"http://127.0.0.1:{stack.port}/metrics"
    worker_url = f"http://127.0.0.1:{stack.env['dramatiq_prom_port']}/metrics"
    repo = Path(tempfile.mkdtemp(prefix="cbm-metrics-repo-")) / "repo"
    generate_repo(repo, 300, 60, seed=41)
    # A NUL byte under a source extension: the listing takes it, the planner's hashing skips it as binary.
    (repo / "blob.py").write_bytes(b"\x00\x01binary" * 100)
    set_embed_delay(fake_embedding_url, 20.0)  # long enough to scrape while batches are in flight
    status_calls = 0
    try:
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo))
            job_id = started["job_id"]
            with pytest.raises(ToolCallError):
                await client.call("get_indexing_status", job_id="not-a-uuid")
            status_calls += 1

            async def recorded_mid_job() -> tuple[Samples, Samples, dict[str, object]] | None:
                nonlocal status_calls
                status = await client.call("get_indexing_status", job_id=job_id)
                status_calls += 1
                if status["status"] != "running":
                    raise AssertionError(f"job left 'running' before a mid-job scrape: {status}")
                try:
                    _, workers = await asyncio.to_thread(scrape, worker_url)
                except urllib.error.URLError:  # the exporter starts once the worker processes have booted
                    return None
                if value(workers, "codebase_mcp_batches_recorded_total") < 1:
                    return None
                _, server = await asyncio.to_thread(scrape, server_url)
                health = await asyncio.to_thread(get_json, f"http://127.0.0.1:{stack.port}/healthz")
                return server, workers, health

            server_mid, workers_mid, health_mid = await wait_for(recorded_mid_job, timeout=120, what="a recorded batch")
            final: dict[str, object] = {}

            async def finished() -> bool:
                nonlocal status_calls, final
                final = await client.call("get_indexing_status", job_id=job_id)
                status_calls += 1
                return final["status"] in TERMINAL_STATUSES

            await wait_for(finished, timeout=300, interval=0.5, what="the job to finish")
            assert final["status"] == "completed", final
    finally:
        set_embed_delay(fake_embedding_url, 0.0)

    # Mid-job: the job gauges show a running job with planned files and progress under way.
    assert value(server_mid, "codebase_mcp_jobs", status="running") == 1
    assert value(server_mid, "codebase_mcp_running_jobs_files_planned") == 300
    assert 0 < value(server_mid, "codebase_mcp_running_jobs_files_processed") <= 300
    assert value(server_mid, "codebase_mcp_oldest_running_job_age_seconds") > 0
    assert value(server_mid, "codebase_mcp_ledger_lag_batches") >= 0
    assert value(workers_mid, "dramatiq_messages_total", queue_name="index.chunk") >= 1
    # /healthz: the process is up and the job is counted while it runs.
    assert health_mid["status"] == "ok" and health_mid["active_jobs"] == 1, health_mid
    assert isinstance(health_mid["oldest_running_job_seconds"], float), health_mid

    async with db.acquire() as conn:
        job = await conn.fetchrow("SELECT * FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    assert job["files_indexed"] == 300 and job["files_skipped"] == 1

    worker_names, workers = await asyncio.to_thread(scrape, worker_url)
    # Aggregated over the processes: the counters equal the job's own (the only job these workers ran).
    assert value(workers, "codebase_mcp_files_total", outcome="indexed") == job["files_indexed"]
    assert value(workers, "codebase_mcp_files_total", outcome="skipped") == job["files_skipped"]
    assert value(workers, "codebase_mcp_files_total", outcome="failed") == job["files_failed"]
    assert value(workers, "codebase_mcp_chunks_written_total") == job["chunks_created"]
    assert value(workers, "codebase_mcp_batches_recorded_total") == job["batches_total"]
    assert value(workers, "codebase_mcp_jobs_finished_total", status="completed") == 1
    for stage in ("chunk", "embed", "write", "record"):
        assert value(workers, "codebase_mcp_batch_stage_duration_seconds_count", stage=stage) >= job["batches_total"]
        assert value(workers, "codebase_mcp_batch_stage_duration_seconds_sum", stage=stage) > 0
    embedded = value(workers, "codebase_mcp_embedding_texts_total", source="embedder")
    assert embedded + value(workers, "codebase_mcp_embedding_texts_total", source="cache") == job["chunks_created"]
    assert value(workers, "codebase_mcp_embedding_batch_texts_sum") == embedded
    assert value(workers, "codebase_mcp_embedding_request_duration_seconds_count") == value(
        workers, "codebase_mcp_embedding_batch_texts_count"
    )
    assert value(workers, "codebase_mcp_embedding_request_duration_seconds_sum") > 0
    assert value(workers, "codebase_mcp_embedding_request_failures_total") == 0
    processes = {p.name.rsplit("_", 1)[-1] for p in Path(stack.env["dramatiq_prom_db"]).glob("counter_*.db")}
    assert len(processes) >= stack.worker_processes, processes

    server_names, server = await asyncio.to_thread(scrape, server_url)
    assert value(server, "codebase_mcp_tool_calls_total", tool="start_indexing_background", outcome="ok") == 1
    assert value(server, "codebase_mcp_tool_calls_total", tool="get_indexing_status", outcome="error") == 1
    assert value(server, "codebase_mcp_tool_calls_total", tool="get_indexing_status") == status_calls
    assert value(server, "codebase_mcp_tool_call_duration_seconds_count", tool="get_indexing_status") == status_calls
    assert value(server, "codebase_mcp_status_query_duration_seconds_count") == status_calls
    assert value(server, "codebase_mcp_jobs", status="completed") >= 1
    assert value(server, "codebase_mcp_jobs", status="running") == 0
    assert value(server, "codebase_mcp_ledger_lag_batches") == 0
    assert value(server, "codebase_mcp_metrics_source_up", source="database") == 1
    assert value(server, "codebase_mcp_metrics_source_up", source="broker") == 1
    assert value(server, "codebase_mcp_queue_consumers", queue="index.embed") >= 1
    assert value(server, "codebase_mcp_queue_messages", queue="index.embed") == 0

    assert_pipeline_logs_carry_job_and_batch(stack.log_dir, job_id)

    documented = documented_metrics()
    assert len(documented) >= 20, documented
    missing = documented - DRAMATIQ_ON_EVENT - worker_names - server_names
    assert not missing, f"documented in README but in neither scrape: {sorted(missing)}"


def assert_pipeline_logs_carry_job_and_batch(log_dir: Path, job_id: str) -> None:
    """JSON mode: one object per line, and every pipeline-stage line names its job and batch."""
    stage_lines = []
    for path in log_dir.glob("workers-*.log"):
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue  # Dramatiq's parent process writes its own few lines in its own format
            entry = json.loads(line)
            assert {"ts", "level", "logger", "event"} <= entry.keys(), entry
            if entry["logger"] in ("actors.pipeline", "actors.coordinator") and entry.get("stage") != "failure":
                assert entry.get("job_id") and isinstance(entry.get("batch"), int), entry
                stage_lines.append(entry)
    assert any(entry["job_id"] == job_id and "job completed" in entry["event"] for entry in stage_lines), stage_lines


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str, str]:
    """Run ``codebase-mcp`` with the stack's environment; returns (exit status, stdout, stderr)."""
    done = subprocess.run(
        [str(BIN / "codebase-mcp"), *args],
        env={**stack.env, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    return done.returncode, done.stdout, done.stderr


def test_doctor_passes_on_a_working_stack_and_names_the_fix_otherwise(metrics_stack: Stack) -> None:
    code, out, err = cli(metrics_stack, "doctor", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"], (report, err)
    assert {check["name"] for check in report["checks"]} == {"database", "broker", "embedder"}
    password_free = json.dumps(report["settings"])
    assert ":guest@" not in password_free and "guest:***@" in password_free

    code, out, _ = cli(
        metrics_stack, "doctor", env={"CODEBASE_MCP_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    )
    assert code == 1
    assert "FAIL broker" in out and "fix: start RabbitMQ" in out
    assert "ok   database" in out


def test_status_without_job_shows_the_newest(metrics_stack: Stack) -> None:
    code, out, err = cli(metrics_stack, "jobs", "--json")
    assert code == 0, err
    listed = json.loads(out)["jobs"]
    code, out, err = cli(metrics_stack, "status", "--json")
    if not listed:
        assert code == 1 and "no jobs yet" in err
    else:
        assert code == 0, err
        assert json.loads(out)["job_id"] == listed[0]["job_id"]


@pytest.mark.parametrize("cancel", [False, True], ids=["detach", "cancel-on-interrupt"])
async def test_ctrl_c_detaches_or_cancels(
    metrics_stack: Stack, db: asyncpg.Pool, fake_embedding_url: str, cancel: bool
) -> None:
    repo = Path(tempfile.mkdtemp(prefix="cbm-interrupt-repo-")) / "repo"
    generate_repo(repo, 200, 60, seed=51 + cancel)
    set_embed_delay(fake_embedding_url, 20.0)
    args = [str(BIN / "codebase-mcp"), "index", str(repo), "--workers", "never"]
    try:
        process = subprocess.Popen(
            args + (["--cancel-on-interrupt"] if cancel else []),
            env={**metrics_stack.env, "PYTHONPATH": str(REPO_ROOT), "CODEBASE_MCP_LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        assert process.stderr is not None
        first = await asyncio.to_thread(process.stderr.readline)
        match = re.match(r"job ([0-9a-f-]{36}) running", first)
        assert match, first
        job_id = uuid.UUID(match.group(1))
        second = await asyncio.to_thread(process.stderr.readline)  # the first progress line: it is following
        assert "%" in second, second
        process.send_signal(signal.SIGINT)
        _, rest = await asyncio.to_thread(process.communicate, timeout=60)
        assert process.returncode == 130, rest
        async with db.acquire() as conn:
            status = await conn.fetchval("SELECT status FROM indexing_jobs WHERE id = $1", job_id)
        if cancel:
            assert "cancelled job" in rest and status == "cancelled", (rest, status)
        else:
            assert f"codebase-mcp status {job_id}" in rest and status == "running", (rest, status)
            code, out, err = cli(metrics_stack, "cancel", str(job_id), "--json")
            assert code == 0 and json.loads(out)["status"] == "cancelled", err
    finally:
        set_embed_delay(fake_embedding_url, 0.0)


async def test_stdio_server_serves_metrics_on_its_metrics_port(metrics_stack: Stack) -> None:
    port = free_port()
    server = StdioServerParameters(
        command=str(BIN / "codebase-mcp"),
        args=["serve"],
        env={**metrics_stack.env, "PYTHONPATH": str(REPO_ROOT), "CODEBASE_MCP_METRICS_PORT": str(port)},
        cwd=REPO_ROOT,
    )

    def scrape_when_up() -> tuple[set[str], Samples]:
        deadline = time.monotonic() + 120
        while True:
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "no metrics port after 120 s"
                time.sleep(0.5)

    # A real tool call over stdio (the SDK client fails on any stdout line that is not an MCP
    # message), then the metrics port must show that very call counted.
    async with Client(server, read_timeout_seconds=120) as client:
        result = await client.call_tool("list_repositories", {})
        assert not result.is_error, result.content
        _, samples = await asyncio.to_thread(scrape_when_up)
    assert value(samples, "codebase_mcp_metrics_source_up", source="database") == 1
    assert value(samples, "codebase_mcp_queue_consumers", queue="index.embed") >= 1
    assert value(samples, "codebase_mcp_tool_calls_total", tool="list_repositories", outcome="ok") == 1
    assert value(samples, "codebase_mcp_tool_call_duration_seconds_count", tool="list_repositories") == 1
