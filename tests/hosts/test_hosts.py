"""Across hosts (``-m hosts``): the pipeline split over four network namespaces, then broken.

The stack (``conftest.py``) runs each host as ``docs/deployment.md`` says. The first test checks
that the hosts really are apart (connections arrive from each host's address, the embed worker
sees no repository), then runs a job that is cancelled, and a new one that goes on through a
SIGKILL of each host's processes in turn. The others cut the embed host's link for 30 s, slow
PostgreSQL's answers to the workers by 200 ms, and stop RabbitMQ for a minute. Every job ends
``completed`` with each file stored once and no chunk twice (the crash matrix's checks); resume
time and duplicate work per case are printed (``-s``) and recorded in ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import Db
from tests.faults.test_crash_matrix import (
    Outcome,
    control,
    duplicate_work,
    make_repo,
    progress,
    verify_cancelled,
    verify_completed,
    wait_moved,
    wait_terminal,
)
from tests.hosts.conftest import EMBED_DELAY_MS_PER_TEXT, PG_PORT, HostsStack
from tests.integration.stack import REPO_ROOT, wait_for
from tests.integration.test_security import client_with

pytestmark = pytest.mark.hosts

REPO_FILES = 500
LINK_DOWN_SECONDS = 30.0
BROKER_DOWN_SECONDS = 60.0
LATENCY_MS = 200.0
RELAY_PORT = PG_PORT + 1
RESULTS: list[Outcome] = []


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """The table of docs/reliability.md "Across hosts", once every case ran."""
    yield
    if not RESULTS:
        return
    lines = ["", "| case | resume s | duplicate files % | duplicate texts % | files lost | duplicate chunks |"]
    lines.append("|---|---|---|---|---|---|")
    for outcome in RESULTS:
        resume = ", ".join(f"{s:.1f}" for s in outcome.resume_seconds) or "-"
        lines.append(
            f"| {outcome.case} | {resume} | {outcome.duplicate_files_pct:.2f} | {outcome.duplicate_texts_pct:.2f} "
            f"| {outcome.files_lost} | {outcome.duplicate_chunks} |" + (f" {outcome.note}" if outcome.note else "")
        )
    print("\n".join(lines))


def fresh_embedder(stack: HostsStack) -> None:
    control(stack.embedding_url, {"delay_ms_per_text": EMBED_DELAY_MS_PER_TEXT, "fail": False, "reset_stats": True})


async def start_job(stack: HostsStack, repo: Path, name: str) -> str:
    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo), name=name)
    return str(started["job_id"])


async def finish(case: str, stack: HostsStack, db: Db, job_id: str, repo: Path, resume: list[float], note: str) -> None:
    assert await wait_terminal(db, job_id, timeout=900) == "completed", case
    lost, duplicates = await verify_completed(db, job_id, repo)
    files_pct, texts_pct = await duplicate_work(db, job_id, stack.embedding_url)
    RESULTS.append(Outcome(case, resume, files_pct, texts_pct, lost, duplicates, note))
    print(f"\n{case}: resume {resume} s, {files_pct:.2f}% files / {texts_pct:.2f}% texts again, {note}")


async def test_hosts_are_apart(hosts_stack: HostsStack, hosts_db: Db) -> None:
    net = hosts_stack.network
    fresh_embedder(hosts_stack)
    small = make_repo(hosts_stack.repos, 2, files=40)
    job_id = await start_job(hosts_stack, small, "apart")
    assert await wait_terminal(hosts_db, job_id) == "completed"
    await verify_completed(hosts_db, job_id, small)
    # Every host but data connects to PostgreSQL and RabbitMQ over the switch, from its own address
    # (the pools keep the connections the job opened).
    clients = {str(row["client_addr"]) for row in await hosts_db.fetch("SELECT client_addr FROM pg_stat_activity")}
    assert {net.address(host) for host in ("api", "chunk", "embed")} <= clients, clients
    assert hosts_stack.rabbit is not None
    peers = hosts_stack.rabbit._ctl("list_connections", "peer_host").stdout.split()
    assert {net.address(host) for host in ("api", "chunk", "embed")} <= set(peers), peers
    # The embed worker's view of the repositories' folder is an empty, unreadable tmpfs; chunk's is the real one.
    repo = make_repo(hosts_stack.repos, 1)
    embed_pid = hosts_stack.groups["embed"].pid
    chunk_pid = hosts_stack.groups["chunk"].pid
    assert any(Path(f"/proc/{chunk_pid}/root{repo}").iterdir())
    hidden = Path(f"/proc/{embed_pid}/root{hosts_stack.repos}")
    mounts = Path(f"/proc/{embed_pid}/mounts").read_text(encoding="utf-8")
    assert f" {hosts_stack.repos} tmpfs " in mounts, mounts
    assert not (hidden / repo.name).exists()
    # The API host refuses a client without the token the page gives it.
    statuses: list[int] = []
    with pytest.raises(Exception):  # noqa: B017 (the SDK turns the 401 into an MCPError inside task groups)
        async with asyncio.timeout(30), client_with(hosts_stack, {}, statuses) as client:
            await client.call("list_repositories")
    assert statuses == [401], statuses


async def test_cancel_then_resume_through_sigkill_of_each_host(hosts_stack: HostsStack, hosts_db: Db) -> None:
    fresh_embedder(hosts_stack)
    repo = make_repo(hosts_stack.repos, 100)
    first = await start_job(hosts_stack, repo, "across-hosts")
    await wait_moved(hosts_db, first, "recorded", 4)
    async with hosts_stack.client() as client:
        assert (await client.call("cancel_indexing_background", job_id=first))["status"] == "cancelled"
    await verify_cancelled(hosts_db, first)
    kept = await hosts_db.fetchval("SELECT count(*) FROM files WHERE job_id = $1", uuid.UUID(first))
    assert kept > 0
    # Two phases (issue 12): files stored without all their vectors are indexed again by the next job.
    complete = await hosts_db.fetchval(
        "SELECT count(*) FROM files f WHERE f.job_id = $1 "
        "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.file_id = f.id AND c.embedding IS NULL)",
        uuid.UUID(first),
    )

    job_id = await start_job(hosts_stack, repo, "across-hosts")
    assert job_id != first
    resume: list[float] = []
    data_boot = 0.0
    for host in ("api", "chunk", "embed", "data"):
        before = await wait_moved(hosts_db, job_id, "recorded", (await progress(hosts_db, job_id))["recorded"])
        assert before["status"] == "running", f"job ended before the {host} kill: repository too small"
        await asyncio.sleep(random.uniform(0.0, 0.5))
        if host == "api":
            hosts_stack.kill_server(signal.SIGKILL)
            restarted = time.monotonic()
            hosts_stack.start_server()
            resume.append(time.monotonic() - restarted)
            continue
        if host == "data":
            hosts_stack.kill_data()
            await asyncio.sleep(1.0)
            booting = time.monotonic()
            await asyncio.to_thread(hosts_stack.start_data)
            restarted = time.monotonic()
            data_boot = restarted - booting
        else:
            hosts_stack.kill_group(host)
            await asyncio.sleep(random.uniform(0.2, 1.0))
            restarted = time.monotonic()
            hosts_stack.start_group(host)
        at_restart = (await progress(hosts_db, job_id))["recorded"]
        await wait_moved(hosts_db, job_id, "recorded", at_restart, timeout=300)
        resume.append(time.monotonic() - restarted)
    await finish(
        "cancelled, then SIGKILL of api, chunk, embed, data in turn",
        hosts_stack,
        hosts_db,
        job_id,
        repo,
        resume,
        f"(first job cancelled with {kept} files stored, the {complete} with all their vectors kept as "
        "unchanged; resume per host: api = server "
        "start to ready, chunk and embed = worker restart to the next batch recorded, data = RabbitMQ and "
        f"PostgreSQL back (their boot took {data_boot:.1f} s) to the next batch recorded)",
    )
    job = await hosts_db.fetchrow("SELECT files_unchanged FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
    assert job["files_unchanged"] == complete


async def test_embed_host_link_cut_for_30_s(hosts_stack: HostsStack, hosts_db: Db) -> None:
    fresh_embedder(hosts_stack)
    repo = make_repo(hosts_stack.repos, 200)
    job_id = await start_job(hosts_stack, repo, "link-cut")
    await wait_moved(hosts_db, job_id, "embed_runs", 10)
    hosts_stack.network.set_link("embed", up=False)
    try:
        await asyncio.sleep(LINK_DOWN_SECONDS)
        at_cut_end = await progress(hosts_db, job_id)
    finally:
        hosts_stack.network.set_link("embed", up=True)
    back = time.monotonic()
    await wait_moved(hosts_db, job_id, "embed_runs", at_cut_end["embed_runs"], timeout=300)
    resumed = time.monotonic() - back
    await finish(
        f"embed host's link down {LINK_DOWN_SECONDS:.0f} s",
        hosts_stack,
        hosts_db,
        job_id,
        repo,
        [resumed],
        "(resume: link up to the next batch embedded)",
    )


async def test_rabbitmq_stopped_for_a_minute(hosts_stack: HostsStack, hosts_db: Db) -> None:
    assert hosts_stack.rabbit is not None
    fresh_embedder(hosts_stack)
    repo = make_repo(hosts_stack.repos, 300)
    job_id = await start_job(hosts_stack, repo, "broker-down")
    await wait_moved(hosts_db, job_id, "recorded", 10)
    hosts_stack.rabbit.stop()
    await asyncio.sleep(BROKER_DOWN_SECONDS)
    at_stop = await progress(hosts_db, job_id)
    # The workers reconnect while the node still boots (before `await_startup` says so), so resume
    # is counted from the start command, the boot included.
    launched = time.monotonic()
    booting = asyncio.create_task(asyncio.to_thread(hosts_stack.rabbit.start))
    await wait_moved(hosts_db, job_id, "recorded", at_stop["recorded"], timeout=300)
    resumed = time.monotonic() - launched
    boot = await booting
    await finish(
        f"data host's RabbitMQ stopped {BROKER_DOWN_SECONDS:.0f} s",
        hosts_stack,
        hosts_db,
        job_id,
        repo,
        [resumed],
        f"(resume from the start command to the next batch recorded; rabbitmqctl await_startup took {boot:.0f} s)",
    )
    for host in ("chunk", "embed"):
        assert hosts_stack.groups[host].poll() is None, f"{host} workers exited while the broker was away"
    assert hosts_stack.server is not None and hosts_stack.server.poll() is None


async def test_200_ms_between_workers_and_postgresql(hosts_stack: HostsStack, hosts_db: Db) -> None:
    net = hosts_stack.network
    data = net.address("data")
    # The same work twice, on repositories of the same size: once as is, once with the slow path.
    fresh_embedder(hosts_stack)
    baseline_repo = make_repo(hosts_stack.repos, 400, files=100)
    began = time.monotonic()
    baseline = await start_job(hosts_stack, baseline_repo, "latency-baseline")
    assert await wait_terminal(hosts_db, baseline, timeout=900) == "completed"
    baseline_seconds = time.monotonic() - began

    relay = subprocess.Popen(
        [
            *net.exec_prefix("data"),
            sys.executable,
            "-m",
            "tests.hosts.delay_relay",
            "--listen",
            f"{data}:{RELAY_PORT}",
            "--upstream",
            f"{data}:{PG_PORT}",
            "--delay-ms",
            str(LATENCY_MS),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "LISTENING"
        workers = f"{{ {net.address('chunk')}, {net.address('embed')} }}"
        net.nft("data", "add", "table", "ip", "cbmdelay")
        net.nft("data", "add", "chain", "ip", "cbmdelay", "pre", "{ type nat hook prerouting priority dstnat; }")
        net.nft(
            "data", "add", "rule", "ip", "cbmdelay", "pre", "ip", "saddr", workers, "tcp", "dport", str(PG_PORT),
            "redirect", "to", f":{RELAY_PORT}",
        )  # fmt: skip
        # Connections already open keep their path (conntrack): new worker processes open new ones.
        # SIGKILL: they are idle between jobs, and a SIGTERMed group takes 60 s to go (reliability.md).
        for host in ("chunk", "embed"):
            hosts_stack.kill_group(host)
            hosts_stack.start_group(host)

        async def through_relay() -> bool:
            rows = await hosts_db.fetch("SELECT client_addr FROM pg_stat_activity WHERE client_addr IS NOT NULL")
            addrs = [str(row["client_addr"]) for row in rows]
            return data in addrs and net.address("chunk") not in addrs and net.address("embed") not in addrs

        fresh_embedder(hosts_stack)
        repo = make_repo(hosts_stack.repos, 401, files=100)
        began = time.monotonic()
        job_id = await start_job(hosts_stack, repo, "latency")
        await wait_moved(hosts_db, job_id, "recorded", 2)
        assert await wait_for(through_relay, timeout=60, what="worker connections through the slow path")
        assert await wait_terminal(hosts_db, job_id, timeout=900) == "completed"
        slow_seconds = time.monotonic() - began
        relay.send_signal(signal.SIGTERM)
        _, _, delayed = relay.communicate(timeout=30)[0].strip().rpartition("DELIVERED ")
        batches = await hosts_db.fetchval("SELECT batches_total FROM indexing_jobs WHERE id = $1", uuid.UUID(job_id))
        round_trips = int(delayed) / batches
        await finish(
            f"{LATENCY_MS:.0f} ms added between the workers and PostgreSQL",
            hosts_stack,
            hosts_db,
            job_id,
            repo,
            [],
            f"(no stop to resume from: the job took {slow_seconds / baseline_seconds:.1f}x the time of the same "
            f"job without the delay, {slow_seconds:.0f} s against {baseline_seconds:.0f} s; the relay delayed "
            f"{round_trips:.0f} answers of PostgreSQL per batch)",
        )
    finally:
        subprocess.run([*net.exec_prefix("data"), "nft", "delete", "table", "ip", "cbmdelay"], check=False)
        if relay.poll() is None:
            relay.kill()
            relay.wait(timeout=10)
        for host in ("chunk", "embed"):
            hosts_stack.kill_group(host)
            hosts_stack.start_group(host)
