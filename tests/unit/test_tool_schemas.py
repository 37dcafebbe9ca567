"""The tool schemas an agent reads: every parameter described and bounded, annotations, strict types.

Read through the SDK's in-memory client, i.e. exactly what ``tools/list`` sends. No database is
needed: the tools are never called with valid arguments, so the service object is never used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from mcp import Client

from models.lifecycle import JOB_STATUSES
from models.settings import Settings
from server.app import build_server
from server.service import IndexingService

READ_ONLY = {"get_indexing_status", "list_indexing_jobs", "search_code", "list_repositories"}
DESTRUCTIVE = {"delete_repository"}


@asynccontextmanager
async def connected() -> AsyncIterator[Client]:
    # A stand-in the lifespan hands out; argument validation fails before any tool would touch it.
    # (A context manager, not a fixture: the client's task scopes must close in the test's own task.)
    server = build_server(Settings(), service=cast(IndexingService, object()))
    async with Client(server) as client:
        yield client


def _types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        return {schema["type"]}
    return {option.get("type", "") for option in schema.get("anyOf", [])} - {"null"}


async def test_every_parameter_has_a_description_and_bounds() -> None:
    async with connected() as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} >= READ_ONLY | DESTRUCTIVE | {"start_indexing_background"}
    missing: list[str] = []
    for tool in tools:
        for name, schema in tool.input_schema.get("properties", {}).items():
            if not str(schema.get("description", "")).strip():
                missing.append(f"{tool.name}.{name}: no description")
            kinds = _types(schema)
            options = [schema, *schema.get("anyOf", [])]
            if "integer" in kinds and not any("minimum" in o and "maximum" in o for o in options):
                missing.append(f"{tool.name}.{name}: integer without minimum/maximum")
            if "string" in kinds and not any("maxLength" in o or "enum" in o for o in options):
                missing.append(f"{tool.name}.{name}: string without maxLength")
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", tool.name
    assert not missing, "\n".join(missing)


async def test_annotations_tell_reading_from_destroying() -> None:
    async with connected() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name, tool in tools.items():
        assert tool.annotations is not None, f"{name} has no annotations"
        assert tool.annotations.read_only_hint is (name in READ_ONLY), name
        if name not in READ_ONLY:
            assert tool.annotations.destructive_hint is (name in DESTRUCTIVE), name
    assert tools["start_indexing_background"].annotations.idempotent_hint is True  # type: ignore[union-attr]
    assert tools["delete_repository"].annotations.idempotent_hint is False  # type: ignore[union-attr]


async def test_status_filter_lists_exactly_the_job_statuses() -> None:
    async with connected() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    status = tools["list_indexing_jobs"].input_schema["properties"]["status"]
    enums = [option["enum"] for option in status["anyOf"] if "enum" in option]
    assert enums == [list(JOB_STATUSES)]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("search_code", {"query": "retry", "limit": True}, "limit\n  Input should be a valid integer"),
        ("search_code", {"query": "retry", "limit": "10"}, "limit\n  Input should be a valid integer"),
        ("search_code", {"query": "retry", "limit": 2.0}, "limit\n  Input should be a valid integer"),
        ("search_code", {"query": "retry", "limit": 101}, "limit\n  Input should be less than or equal to 100"),
        ("search_code", {"query": "retry", "mode": "fuzzy"}, "mode\n  Input should be 'hybrid', 'vector' or 'text'"),
        ("search_code", {"query": 12}, "query\n  Input should be a valid string"),
        ("list_indexing_jobs", {"limit": "50"}, "limit\n  Input should be a valid integer"),
        ("list_indexing_jobs", {"limit": False}, "limit\n  Input should be a valid integer"),
        ("get_indexing_status", {"job_id": 7}, "job_id\n  Input should be a valid string"),
        ("start_indexing_background", {"repo_path": ["/tmp"]}, "repo_path\n  Input should be a valid string"),
    ],
)
async def test_loose_argument_types_are_refused_by_name(tool: str, arguments: dict[str, Any], expected: str) -> None:
    async with connected() as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    message = " ".join(getattr(block, "text", "") for block in result.content)
    assert expected in message, message
