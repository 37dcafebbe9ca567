"""Real processes for integration tests: the MCP server, Dramatiq workers, and an MCP client.

Nothing here is mocked: the server is ``codebase-mcp serve --transport http``, the workers are the
``dramatiq`` CLI, both talk to the session's PostgreSQL and RabbitMQ vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from models.lifecycle import TERMINAL_STATUSES

#: A job in one of these has ended.
TERMINAL = TERMINAL_STATUSES

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_cluster(prefix: str) -> Iterator[str]:
    """An embedded PostgreSQL cluster of its own (temporary data dir, free port) while the block runs;
    yields its URL, then stops and removes it."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield ensure_embedded_postgres(data_dir, free_port())
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


class ToolCallError(Exception):
    """The tool answered with ``is_error``; the message is the text the client saw."""


@dataclass
class McpClient:
    session: ClientSession

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.session.call_tool(tool, arguments)
        if result.is_error:
            raise ToolCallError(" ".join(getattr(block, "text", "") for block in result.content))
        assert result.structured_content is not None, f"{tool} returned no structured content"
        return dict(result.structured_content)

    async def timed(self, tool: str, **arguments: Any) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        answer = await self.call(tool, **arguments)
        return answer, time.perf_counter() - start


@dataclass
class Stack:
    """Server and worker processes sharing one environment; each can be killed and restarted."""

    env: dict[str, str]
    log_dir: Path
    worker_processes: int = 2
    worker_threads: int = 4
    port: int = field(default_factory=free_port)
    #: The server's bind address (``serve --host``), also the address clients use.
    host: str = "127.0.0.1"
    server: subprocess.Popen[bytes] | None = None
    workers: subprocess.Popen[bytes] | None = None
    #: ``dramatiq actors.worker`` (the operator's command), or ``python -m actors.worker`` (the
    #: same CLI with the modules imported before the fork, as the local pools start it) when True.
    preload_workers: bool = False
    _restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._restarts += 1
        log = open(self.log_dir / f"{name}-{self._restarts}.log", "wb")  # noqa: SIM115 (owned by the process)
        return subprocess.Popen(
            args,
            # PYTHONPATH: run this checkout's code even when the venv's editable install points elsewhere.
            env={**self.env, "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,  # its own process group, so a kill reaches Dramatiq's forked workers too
        )

    def start_server(self) -> None:
        self.server = self._spawn(
            "server",
            [str(BIN / "codebase-mcp"), "serve", "--transport", "http", "--host", self.host, "--port", str(self.port)],
        )
        self.wait_healthy()

    def start_workers(self) -> None:
        self.workers = self._spawn(
            "workers",
            [
                *([sys.executable, "-m"] if self.preload_workers else [str(BIN / "dramatiq")]),
                "actors.worker",
                "--processes",
                str(self.worker_processes),
                "--threads",
                str(self.worker_threads),
            ],
            {
                "dramatiq_queue_prefetch": str(self.worker_threads),
                # Each stack's exporter on its own port: 9191 is shared by every stack on the machine.
                "dramatiq_prom_port": self.env.get("dramatiq_prom_port") or str(free_port()),
            },
        )

    def wait_healthy(self, timeout: float = 60.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.server is not None
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited with {self.server.returncode}; see {self.log_dir}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://{self.host}:{self.port}/readyz", timeout=1) as reply,
            ):
                if reply.status == 200:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s; see {self.log_dir}")

    @staticmethod
    def _kill(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill_server(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self._kill(self.server, sig)

    def kill_workers(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self._kill(self.workers, sig)

    def stop(self) -> None:
        # SIGTERM to Dramatiq's main process alone: it passes the signal on to its worker processes.
        # Signalling the whole group gives each worker a second SIGTERM mid-shutdown, on which it
        # leaves its main thread and then waits on its worker threads until the 60 s kill below.
        if self.workers is not None and self.workers.poll() is None:
            self.workers.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.workers.wait(timeout=30)
        self.kill_workers(signal.SIGTERM)
        self.kill_server(signal.SIGTERM)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[McpClient]:
        async with AsyncExitStack() as stack:
            read, write = await _open_streams(stack, self.url)
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            yield McpClient(session)

    @asynccontextmanager
    async def owned_client(self) -> AsyncIterator[McpClient]:
        """A session opened and closed by one task of its own, whichever tasks enter and leave this.

        For fixtures: pytest may finish an async fixture in another task than the one that started
        it, and the MCP client's anyio scopes must exit in the task that entered them.
        """
        ready: asyncio.Future[McpClient] = asyncio.get_running_loop().create_future()
        done = asyncio.Event()

        async def own() -> None:
            async with self.client() as session:
                ready.set_result(session)
                await done.wait()

        owner = asyncio.create_task(own())
        try:
            yield await asyncio.wait_for(asyncio.shield(ready), timeout=30)
        finally:
            done.set()
            await owner


async def _open_streams(stack: AsyncExitStack, url: str) -> tuple[Any, Any]:
    streams = await stack.enter_async_context(streamable_http_client(url))
    return streams[0], streams[1]


async def wait_for(predicate: Any, *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def follow_job(client: McpClient, job_id: str, *, timeout: float, interval: float = 0.5) -> list[dict[str, Any]]:
    """Poll ``get_indexing_status`` until the job ends; returns every status seen, the last one
    terminal (each with the query latency in ``_ms`` and the monotonic time in ``_t``)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        status, seconds = await client.timed("get_indexing_status", job_id=job_id)
        status["_ms"] = seconds * 1000
        status["_t"] = time.monotonic()
        seen.append(status)
        if status["status"] in TERMINAL:
            return seen
        assert time.monotonic() < deadline, f"job {job_id} still {status['status']} after {timeout}s: {status}"
        await asyncio.sleep(interval)


async def finish(client: McpClient, job_id: str, *, timeout: float = 300, interval: float = 0.3) -> dict[str, Any]:
    """The job's terminal status (see :func:`follow_job`)."""
    return (await follow_job(client, job_id, timeout=timeout, interval=interval))[-1]
