"""The MCP server: tool definitions and the two transports (stdio, streamable HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from models.settings import Settings
from server.errors import CallerError
from server.schemas import DeletedRepository, JobList, JobStatus, RepositoryList, SearchResult, StartResult
from server.service import IndexingService, readiness

logger = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = (
    "Semantic code search over local repositories. Index a repository with start_indexing_background "
    "(returns at once with a job id), follow it with get_indexing_status, then ask search_code. "
    "list_repositories shows what is indexed."
)
UPKEEP_INTERVAL_SECONDS = 30.0


async def _upkeep(service: IndexingService) -> None:
    while True:
        await asyncio.sleep(UPKEEP_INTERVAL_SECONDS)
        try:
            await service.reap()
        except Exception:  # upkeep must outlive a database blip; the next round retries
            logger.exception("upkeep round failed")


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[IndexingService]:
    """Open the service, resume interrupted jobs, and keep upkeep running while it is open."""
    async with IndexingService.open(settings) as service:
        await service.resume()
        upkeep = asyncio.create_task(_upkeep(service))
        try:
            yield service
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep


async def _call(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except CallerError as error:
        raise ToolError(str(error)) from None


def build_server(settings: Settings, service: IndexingService | None = None) -> MCPServer[Any]:
    """The MCP server. With ``service`` given (HTTP), the host app owns its life; else (stdio) the server does."""

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[IndexingService]:
        if service is not None:
            yield service
            return
        async with running_service(settings) as opened:
            yield opened

    mcp: MCPServer[Any] = MCPServer("codebase-mcp", instructions=INSTRUCTIONS, lifespan=lifespan)

    def svc(ctx: Context[Any, Any]) -> IndexingService:
        return ctx.request_context.lifespan_context  # type: ignore[no-any-return]

    @mcp.tool()
    async def start_indexing_background(repo_path: str, ctx: Context[Any, Any], name: str | None = None) -> StartResult:
        """Start indexing a repository in the background and return at once with its job id.

        A repository that already has a pending or running job gets that job back. At most
        MAX_CONCURRENT_JOBS run at once; later jobs wait as 'pending' and start by themselves.
        """
        return await _call(svc(ctx).start_indexing(repo_path, name))

    @mcp.tool()
    async def get_indexing_status(job_id: str, ctx: Context[Any, Any]) -> JobStatus:
        """Status of one indexing job: state, phase, progress (never decreasing), counters, timestamps, ETA."""
        return await _call(svc(ctx).status(job_id))

    @mcp.tool()
    async def cancel_indexing_background(job_id: str, ctx: Context[Any, Any]) -> JobStatus:
        """Cancel a pending or running job. Work already stored is kept; workers stop within seconds."""
        return await _call(svc(ctx).cancel(job_id))

    @mcp.tool()
    async def list_indexing_jobs(
        ctx: Context[Any, Any],
        status: str | None = None,
        repo_path: str | None = None,
        created_after: str | None = None,
        limit: int = 50,
    ) -> JobList:
        """Indexing jobs, newest first; filter by status, repository path and creation time (ISO-8601)."""
        return await _call(svc(ctx).list_jobs(status, repo_path, created_after, limit))

    @mcp.tool()
    async def search_code(
        query: str,
        ctx: Context[Any, Any],
        repository: str | None = None,
        language: str | None = None,
        path_prefix: str | None = None,
        limit: int = 10,
        mode: str = "hybrid",
    ) -> SearchResult:
        """Search indexed code by meaning and by words; best chunks first.

        query: a question or description ("where are retries scheduled") or identifiers
        ("getUserName", "user name" finds it too). repository: name or absolute path (see
        list_repositories). language: e.g. python, typescript, go. path_prefix: relative to the
        repository root, e.g. "src/api/". limit: 1..100. mode: hybrid (default: semantic and
        full-text results fused by reciprocal rank), vector (semantic only) or text (words only).
        Each hit has the file path, line range, symbol, snippet, score and its rank in each method.
        """
        return await _call(svc(ctx).search(query, repository, language, path_prefix, limit, mode))

    @mcp.tool()
    async def list_repositories(ctx: Context[Any, Any]) -> RepositoryList:
        """Indexed repositories: name, path, file and chunk counts, languages, last indexed, embedder, active job."""
        return await _call(svc(ctx).list_repositories())

    @mcp.tool()
    async def delete_repository(repository: str, ctx: Context[Any, Any]) -> DeletedRepository:
        """Remove a repository's index (files, chunks, finished jobs) by name or path; the files on disk stay.

        Refused while a job on it is pending, running or blocked: cancel it first.
        """
        return await _call(svc(ctx).delete_repository(repository))

    return mcp


def build_http_app(settings: Settings) -> Starlette:
    """Streamable HTTP at /mcp, plus /healthz, /readyz and /metrics, under one lifespan."""
    holder: dict[str, Any] = {}

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        service: IndexingService | None = holder.get("service")
        if service is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        ready, report = await readiness(service)
        return JSONResponse({"status": "ready" if ready else "degraded", **report}, status_code=200 if ready else 503)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with running_service(settings) as service:
            holder["service"] = service
            mcp = holder["mcp"]
            async with mcp.session_manager.run():
                yield

    # The MCP app needs the service object before requests arrive; a proxy lets the tool lifespan
    # hand out whatever the host lifespan opened.
    class _ServiceProxy:
        def __getattr__(self, name: str) -> Any:
            return getattr(holder["service"], name)

    mcp = build_server(settings, service=_ServiceProxy())  # type: ignore[arg-type]
    holder["mcp"] = mcp
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host=settings.http_host)
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Mount("/metrics", app=make_asgi_app()),
            Mount("/", app=mcp_app),
        ],
        lifespan=lifespan,
    )


def serve_http(settings: Settings, host: str, port: int) -> None:
    uvicorn.run(build_http_app(settings), host=host, port=port, log_level="warning", lifespan="on")


def serve_stdio(settings: Settings) -> None:
    build_server(settings).run()
