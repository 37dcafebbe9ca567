"""The MCP tools through the SDK's in-memory client (``mcp.Client(server)``): no HTTP, no subprocess."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mcp import Client

from models.lifecycle import TERMINAL_STATUSES
from server.app import build_server
from server.service import IndexingService
from tests.inprocess.test_pipeline import make_repo


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_index_follow_and_search_through_the_tools(service: IndexingService, repos_root: Path) -> None:
    repo = make_repo(repos_root, "tools", 5)
    async with Client(build_server(service.settings, service)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"start_indexing_background", "get_indexing_status", "search_code"} <= names
        started = await call(client, "start_indexing_background", repo_path=str(repo))
        assert started["status"] == "running" and not started["existing"]
        deadline = time.monotonic() + 60
        while (status := await call(client, "get_indexing_status", job_id=started["job_id"]))[
            "status"
        ] not in TERMINAL_STATUSES:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        assert status["status"] == "completed" and status["files_indexed"] == 5
        found = await call(client, "search_code", query="function_3 return value plus 3", repository=str(repo))
        assert found["results"], found
        assert any(hit["file_path"].endswith("module_3.py") for hit in found["results"])


async def test_a_bad_argument_is_a_tool_error_naming_it(service: IndexingService) -> None:
    async with Client(build_server(service.settings, service)) as client:
        result = await client.call_tool("get_indexing_status", {"job_id": "not-a-uuid"})
    assert result.is_error
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "job_id" in text and "not-a-uuid" in text
