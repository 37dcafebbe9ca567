"""Bounds a hostile local process must not get around (issue 16): HTTP sessions, /readyz, the worker exporter.

- abandoned HTTP sessions (initialize, never DELETE) expire after ``HTTP_SESSION_IDLE_SECONDS``, and
  at ``HTTP_MAX_SESSIONS`` the least recently used idle one is evicted instead of refusing newcomers;
- ``/readyz`` with RabbitMQ down answers after one connection attempt, not after the URL's retries;
- the workers' Prometheus exporter listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from models.settings import Settings
from server.service import IndexingService, readiness
from tests.integration.stack import Stack, free_port

#: A released protocol version whose requests need no per-request ``_meta`` envelope, as curl scripts send.
PROTOCOL_VERSION = "2025-11-25"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _post(url: str, body: dict[str, Any], session: str | None = None) -> tuple[int, str | None]:
    headers = dict(MCP_HEADERS)
    if session is not None:
        headers["mcp-session-id"] = session
        headers["mcp-protocol-version"] = PROTOCOL_VERSION
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            reply.read()
            return reply.status, reply.headers.get("mcp-session-id")
    except urllib.error.HTTPError as error:
        return error.code, None


def open_abandoned_session(url: str) -> str:
    """What the hostile tester's script did 10,000 times: initialize, then never come back nor DELETE."""
    status, session = _post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "abandoner", "version": "0"},
            },
        },
    )
    assert status == 200 and session, status
    return session


def ping(url: str, session: str) -> int:
    return _post(url, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session)[0]


@pytest.fixture(scope="module")
def start_stack(base_env: dict[str, str], make_vhost: Callable[[], str]) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(*, workers: bool = False, server: bool = True, **env: str) -> Stack:
        log_dir = Path(tempfile.mkdtemp(prefix="cbm-test-bounds-logs-"))
        stack = Stack(env={**base_env, "CODEBASE_MCP_BROKER_URL": make_vhost(), **env}, log_dir=log_dir)
        started.append(stack)
        if workers:
            stack.start_workers()
        if server:
            stack.start_server()
        return stack

    yield start
    for stack in started:
        stack.stop()


async def test_at_the_session_cap_the_least_recently_used_idle_session_makes_room(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack(CODEBASE_MCP_HTTP_MAX_SESSIONS="3")
    abandoned = [open_abandoned_session(stack.url) for _ in range(3)]
    assert ping(stack.url, abandoned[2]) == 200  # the newest is now the most recently used
    # A legitimate client still gets in (before: with the SDK's cap it got 503 for 30 minutes) ...
    async with stack.client() as client:
        assert "repositories" in await client.call("list_repositories")
        # ... at the expense of the session idle the longest, which now answers 404 (re-initialize).
        assert ping(stack.url, abandoned[0]) == 404
        assert ping(stack.url, abandoned[2]) == 200
        # A flood goes on pushing out idle sessions only: the client's own session survives it.
        for _ in range(10):
            open_abandoned_session(stack.url)
        assert "repositories" in await client.call("list_repositories")


async def test_an_abandoned_session_expires_after_the_idle_timeout(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(CODEBASE_MCP_HTTP_SESSION_IDLE_SECONDS="1")
    session = open_abandoned_session(stack.url)
    deadline = time.monotonic() + 60
    while ping(stack.url, session) == 200:  # each ping restarts the countdown, so wait past it first
        assert time.monotonic() < deadline, "session still open 60 s after a 1 s idle timeout"
        await asyncio.sleep(3)
    assert ping(stack.url, session) == 404


async def test_readyz_tries_a_down_broker_once(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    retry_delay = 10
    settings = Settings(
        data_dir=tmp_path / "data",
        embedder="local",
        broker_url=f"amqp://guest:guest@127.0.0.1:{closed}/%2F?connection_attempts=3&retry_delay={retry_delay}",
    )
    engine = create_async_engine(f"postgresql+asyncpg://x:y@127.0.0.1:{closed}/x")
    try:
        start = time.monotonic()
        ready, report = await readiness(IndexingService(settings, engine, 384))
        elapsed = time.monotonic() - start
    finally:
        await engine.dispose()
    assert not ready
    assert "ConnectionRefusedError" in str(report["broker"]), report  # before: an empty detail
    # Before: connection_attempts × retry_delay (here 20 s and more); now one attempt.
    assert elapsed < retry_delay, f"/readyz took {elapsed:.1f} s: the URL's retries were followed"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


async def test_the_worker_exporter_listens_on_loopback_by_default(start_stack: Callable[..., Stack]) -> None:
    port = free_port()
    stack = start_stack(workers=True, server=False, dramatiq_prom_port=str(port))
    deadline = time.monotonic() + 60
    while not (addresses := _listening_addresses(port)):
        assert stack.workers is not None and stack.workers.poll() is None, "workers exited"
        assert time.monotonic() < deadline, "the worker exporter never listened"
        await asyncio.sleep(0.5)
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1; before: 00000000 (0.0.0.0)
