"""Security on the real stack: the bearer token guards HTTP, and credentials never leak.

The server and workers get a RabbitMQ user with a password (on its own vhost), a database URL
with a password, an embedder URL with a password and an auth token. Errors are forced (bad
tool calls, an embedding service that fails a job, a server whose database is down, a server
with a wrong broker password), logs run at DEBUG, and then every log file and every tool
result is searched for every secret.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import BIN, REPO_ROOT, TERMINAL, McpClient, Stack, ToolCallError, free_port, wait_for
from tests.integration.test_background_indexing import control


@dataclass
class Secrets:
    broker_password: str
    database_password: str
    embedder_password: str
    token: str

    def all(self) -> list[str]:
        return [self.broker_password, self.database_password, self.embedder_password, self.token]

    def forms(self) -> list[str]:
        """Each secret as written and as percent-encoded in a URL."""
        return sorted({form for secret in self.all() for form in (secret, quote(secret, safe=""))})


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def secret_values() -> Secrets:
    # Characters that URLs must percent-encode, so both spellings are searched for.
    return Secrets(
        broker_password=f"Brk:{secrets.token_hex(6)}@#",
        database_password=f"Db/{secrets.token_hex(6)}!",
        embedder_password=f"Emb{secrets.token_hex(6)}",
        token=f"tok-{secrets.token_urlsafe(24)}",
    )


@pytest.fixture(scope="module")
def broker_with_password(rabbitmq_ready: None, secret_values: Secrets) -> Iterator[str]:
    """A fresh vhost and a RabbitMQ user with a password (removed afterwards; the node is untouched)."""
    suffix = uuid.uuid4().hex[:10]
    vhost, user = f"cbm-secret-{suffix}", f"cbm-secret-{suffix}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", user, secret_values.broker_password)
    _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    password = quote(secret_values.broker_password, safe="")
    yield f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}?heartbeat=10&connection_attempts=3&retry_delay=1"
    _rabbitmqctl("delete_user", user, check=False)
    _rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture(scope="module")
async def database_with_password(database_url: str, db: asyncpg.Pool, secret_values: Secrets) -> str:
    """The session database, reached as a role that has a password."""
    role = f"cbm_secret_{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        literal = secret_values.database_password.replace("'", "''")
        await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{literal}'")  # test set-up only
    return _with_credentials(database_url, role, secret_values.database_password)


@pytest.fixture(scope="module")
def stack(
    start_stack: Callable[..., Stack],
    broker_with_password: str,
    database_with_password: str,
    fake_embedding_url: str,
    secret_values: Secrets,
) -> Stack:
    env = {
        "CODEBASE_MCP_BROKER_URL": broker_with_password,
        "CODEBASE_MCP_DATABASE_URL": database_with_password,
        "CODEBASE_MCP_OLLAMA_URL": _with_credentials(fake_embedding_url, "embed", secret_values.embedder_password),
        "CODEBASE_MCP_AUTH_TOKEN": secret_values.token,
        "CODEBASE_MCP_LOG_LEVEL": "DEBUG",
        "CODEBASE_MCP_EMBED_MAX_ATTEMPTS": "2",
        # The failing-embedder job waits (blocked) this long before it fails.
        "CODEBASE_MCP_BLOCKED_TIMEOUT_SECONDS": "10",
    }
    return start_stack(env=env, worker_processes=1, worker_threads=2)


@asynccontextmanager
async def client_with(
    stack: Stack, headers: dict[str, str], statuses: list[int] | None = None
) -> AsyncIterator[McpClient]:
    """An MCP client sending ``headers``; the HTTP status of every response goes to ``statuses``."""
    async with AsyncExitStack() as exits:
        http = await exits.enter_async_context(create_mcp_http_client(headers=headers))
        if statuses is not None:

            async def seen(response: Any) -> None:
                statuses.append(response.status_code)

            http.event_hooks = {**http.event_hooks, "response": [seen]}
        streams = await exits.enter_async_context(streamable_http_client(stack.url, http_client=http))
        session = await exits.enter_async_context(ClientSession(streams[0], streams[1]))
        await session.initialize()
        yield McpClient(session)


def http_get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):  # not listening (yet, or any more)
        return 0, b""


def test_http_needs_the_bearer_token_except_for_probes(stack: Stack, secret_values: Secrets) -> None:
    base = f"http://127.0.0.1:{stack.port}"
    for path, method in (("/mcp", "POST"), ("/mcp", "GET"), ("/metrics", "GET")):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {secret_values.token}"}):
            status, body = http_get(base + path, headers, method)
            assert status == 401, (path, headers, status)
            assert json.loads(body)["error"] == "unauthorized"
    status, body = http_get(base + "/metrics", {"Authorization": f"Bearer {secret_values.token}"})
    assert status == 200 and b"# HELP" in body
    assert http_get(base + "/healthz")[0] == 200
    status, body = http_get(base + "/readyz")
    assert status == 200, body
    assert json.loads(body)["broker"] == "ok"


async def test_mcp_client_with_the_token_works_and_without_it_is_refused(stack: Stack, secret_values: Secrets) -> None:
    async with client_with(stack, {"Authorization": f"Bearer {secret_values.token}"}) as client:
        listed = await client.call("list_indexing_jobs", limit=5)
        assert "jobs" in listed
    statuses: list[int] = []
    with pytest.raises(Exception):  # noqa: B017 (the SDK turns the 401 into an MCPError inside task groups)
        async with asyncio.timeout(30), client_with(stack, {"Authorization": "Bearer wrong"}, statuses) as client:
            await client.call("list_indexing_jobs", limit=5)
    assert statuses == [401], statuses


def run_failing_server(env: dict[str, str], log: Path, seconds: float = 20.0) -> None:
    """Start a server expected to fail or degrade; let it log for a while, then stop it."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "codebase-mcp"), "serve", "--transport", "http", "--port", str(port)],
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        try:
            deadline = seconds
            while deadline > 0 and process.poll() is None:
                status, body = http_get(f"http://127.0.0.1:{port}/readyz")
                if status in (200, 503) and b"broker" in body:
                    log.with_suffix(".readyz").write_bytes(body)
                    break
                deadline -= 0.5
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=60)


async def test_no_secret_in_logs_errors_or_results(
    stack: Stack, secret_values: Secrets, fake_embedding_url: str, tmp_path: Path
) -> None:
    answers: list[str] = []
    repo = tmp_path / "repo"
    generate_repo(repo, 15, 30, seed=5)
    async with client_with(stack, {"Authorization": f"Bearer {secret_values.token}"}) as client:

        async def record(tool: str, **arguments: Any) -> None:
            try:
                answers.append(json.dumps(await client.call(tool, **arguments)))
            except ToolCallError as error:
                answers.append(str(error))

        # Caller errors of every kind.
        await record("start_indexing_background", repo_path="/no/such/repo")
        await record("start_indexing_background", repo_path=123)
        await record("get_indexing_status", job_id="bogus")
        await record("get_indexing_status", job_id=str(uuid.uuid4()))
        await record("search_code", query="x", repository="nope")
        await record("list_indexing_jobs", status="bogus")
        # A job that completes, then one that fails because the embedding service fails.
        started = await client.call("start_indexing_background", repo_path=str(repo), name="ok")
        answers.append(json.dumps(started))

        async def ended(job_id: str) -> dict[str, Any] | None:
            status = await client.call("get_indexing_status", job_id=job_id)
            return status if status["status"] in TERMINAL else None

        done = await wait_for(lambda: ended(started["job_id"]), timeout=180, what="the first job")
        assert done["status"] == "completed", done
        answers.append(json.dumps(await client.call("search_code", query="def", limit=3)))
        control(fake_embedding_url, {"fail": True})
        try:
            failing = tmp_path / "failing"
            generate_repo(failing, 10, 30, seed=6)
            started = await client.call("start_indexing_background", repo_path=str(failing), name="failing")
            failed = await wait_for(lambda: ended(started["job_id"]), timeout=180, what="the failing job")
            answers.append(json.dumps(failed))
            await record("search_code", query="anything at all", limit=3)  # the embedder fails here too
        finally:
            control(fake_embedding_url, {"fail": False})
        assert failed["status"] == "failed", failed
        assert "embedding service" in failed["error_message"]
        assert "embed:***@" in failed["error_message"], failed["error_message"]  # the URL is there, masked
        answers.append(json.dumps(await client.call("list_indexing_jobs", limit=50)))
    http_get(f"http://127.0.0.1:{stack.port}/mcp", {"Authorization": f"Bearer {secret_values.token}x"}, "POST")

    # A server whose database is unreachable (same password) and one with a wrong broker password.
    down = urlsplit(stack.env["CODEBASE_MCP_DATABASE_URL"])
    dead_db = urlunsplit(down._replace(netloc=down.netloc.rsplit(":", 1)[0] + f":{free_port()}"))
    run_failing_server({**stack.env, "CODEBASE_MCP_DATABASE_URL": dead_db}, stack.log_dir / "dead-db.log")
    wrong_broker = stack.env["CODEBASE_MCP_BROKER_URL"].replace(
        quote(secret_values.broker_password, safe=""), quote(secret_values.broker_password + "-wrong", safe="")
    )
    run_failing_server({**stack.env, "CODEBASE_MCP_BROKER_URL": wrong_broker}, stack.log_dir / "wrong-broker.log")
    readyz = (stack.log_dir / "wrong-broker.readyz").read_text(encoding="utf-8")
    assert json.loads(readyz)["broker"].startswith("unreachable"), readyz
    dead_db_log = (stack.log_dir / "dead-db.log").read_text(encoding="utf-8", errors="replace")
    # The failure names what could not be reached (the dead port), and startup stops.
    assert f"Connect call failed ('127.0.0.1', {urlsplit(dead_db).port})" in dead_db_log, dead_db_log[-2000:]
    assert "Application startup failed" in dead_db_log, dead_db_log[-2000:]

    stack.stop()  # flush and close every log
    logs = {path.name: path.read_text(encoding="utf-8", errors="replace") for path in stack.log_dir.iterdir()}
    assert any("embedding call failed" in text for text in logs.values()), "the forced failure was not logged"
    assert sum(len(text) for text in logs.values()) > 10_000, "DEBUG logs are suspiciously short"
    haystacks = {**logs, **{f"answer {index}": text for index, text in enumerate(answers)}}
    leaks = [
        (name, secret, text[max(0, text.find(secret) - 120) : text.find(secret) + 60])
        for name, text in haystacks.items()
        for secret in secret_values.forms()
        if secret in text
    ]
    assert not leaks, leaks
