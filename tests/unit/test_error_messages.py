"""Failures a client or an operator reads: they name the cause, never the SDK's bare "Error executing tool".

The database failures are real: an asyncpg/SQLAlchemy engine pointed at a port where nothing
listens, and a SQLAlchemy ``DBAPIError`` formatted by Python's own traceback module.
"""

from __future__ import annotations

import socket
import traceback
import uuid
from typing import Any

import pytest
from mcp import Client
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from models.logs import failure_cause
from models.settings import Settings
from server.app import build_server
from server.errors import outage_message
from server.service import IndexingService


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _dead_database_url() -> str:
    return f"postgresql+asyncpg://cbm:s3cretpw@127.0.0.1:{_closed_port()}/nothing"


def _formatted(error: BaseException) -> str:
    try:
        raise error
    except BaseException as raised:
        return "".join(traceback.format_exception(raised))


def test_the_cause_of_a_sqlalchemy_error_is_its_message_not_the_background_link() -> None:
    orig = Exception("invalid input syntax for type json\nDETAIL:  Unicode low surrogate must follow a high surrogate.")
    error = DBAPIError("INSERT INTO index_batches (files) VALUES ($1)", [["huge chunk text"] * 3], orig)
    trace = _formatted(error)
    assert trace.strip().splitlines()[-1].startswith("(Background on this error at:")  # what was shown before
    cause = failure_cause(trace)
    assert cause.startswith("sqlalchemy.exc.DBAPIError: ")
    assert "invalid input syntax for type json" in cause
    assert "DETAIL:  Unicode low surrogate" in cause
    assert "Background on this error" not in cause
    assert "INSERT INTO" not in cause and "huge chunk text" not in cause  # no SQL, no parameters


def test_the_cause_of_a_plain_error_is_its_last_line() -> None:
    trace = _formatted(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 54395)"))
    assert failure_cause(trace) == "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 54395)"


def test_a_long_cause_is_bounded() -> None:
    assert len(failure_cause(_formatted(RuntimeError("x" * 5000)))) <= 500


async def test_a_refused_database_connection_is_named_without_its_address_or_password() -> None:
    engine = create_async_engine(_dead_database_url())
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011 (whatever the driver raises is the point)
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    message = outage_message(caught.value)
    assert message is not None and message.startswith("the database is unavailable (")
    assert "s3cretpw" not in message and "127.0.0.1" not in message


def test_a_bug_is_not_passed_off_as_an_outage() -> None:
    assert outage_message(ValueError("bug")) is None
    assert outage_message(KeyError("files")) is None


async def _call_tool(service: IndexingService, tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    async with Client(build_server(service.settings, service=service)) as client:
        result = await client.call_tool(tool, arguments)
    return bool(result.is_error), " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
async def dead_service(tmp_path: Any) -> Any:
    """A service whose database is down (nothing listens on its port)."""
    engine = create_async_engine(_dead_database_url())
    yield IndexingService(Settings(data_dir=tmp_path / "data"), engine, 384)
    await engine.dispose()


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("list_indexing_jobs", {}),
        ("list_repositories", {}),
        ("get_indexing_status", {"job_id": str(uuid.uuid4())}),
        ("search_code", {"query": "parse invoice", "mode": "text"}),
    ],
)
async def test_every_tool_names_a_database_outage(dead_service: IndexingService, tool: str, arguments: Any) -> None:
    is_error, text = await _call_tool(dead_service, tool, arguments)
    assert is_error
    assert "the database is unavailable (" in text, text  # before: only "Error executing tool <name>"
