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
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from models.logs import redact
from models.settings import Settings
from server.auth import BearerTokenMiddleware
from server.errors import CallerError
from server.metrics import STATUS_QUERY_DURATION, StateCollector, ToolMetrics, job_summary
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
HEALTH_DB_TIMEOUT_SECONDS = 2.0


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


@asynccontextmanager
async def exported_state(service: IndexingService) -> AsyncIterator[StateCollector]:
    """Register the scrape-time gauges (database, broker) in the default registry while open."""
    collector = StateCollector(service.engine, service.settings.broker_url)
    REGISTRY.register(collector)
    try:
        yield collector
    finally:
        REGISTRY.unregister(collector)


@asynccontextmanager
async def metrics_port(service: IndexingService) -> AsyncIterator[None]:
    """stdio mode: serve /metrics on METRICS_PORT (a daemon thread) when it is set."""
    settings = service.settings
    if settings.metrics_port is None:
        yield
        return
    async with exported_state(service):
        httpd, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
        try:
            yield
        finally:
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()


async def _call(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except CallerError as error:
        # Anything else stays an UnexpectedToolError: the SDK logs it (masked) and the client sees
        # only "Error executing tool <name>", so no connection detail leaves the server.
        raise ToolError(redact(str(error))) from None


def build_server(settings: Settings, service: IndexingService | None = None) -> MCPServer[Any]:
    """The MCP server. With ``service`` given (HTTP), the host app owns its life; else (stdio) the server does."""

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[IndexingService]:
        if service is not None:
            yield service
            return
        async with running_service(settings) as opened, metrics_port(opened):
            yield opened

    mcp: MCPServer[Any] = MCPServer("codebase-mcp", instructions=INSTRUCTIONS, lifespan=lifespan)
    # The tool registry is only reachable through the private manager; it bounds the tool label.
    mcp.middleware.append(ToolMetrics(lambda: {tool.name for tool in mcp._tool_manager.list_tools()}))

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
        with STATUS_QUERY_DURATION.time():
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
        scope: str = "code",
    ) -> SearchResult:
        """Search indexed code by meaning and by words; best chunks first.

        query: a question or description ("where are retries scheduled") or identifiers
        ("getUserName", "user name" finds it too). repository: name or absolute path (see
        list_repositories). language: e.g. python, typescript, go. path_prefix: relative to the
        repository root, e.g. "src/api/". limit: 1..100. mode: hybrid (default: semantic and
        full-text results fused by reciprocal rank), vector (semantic only) or text (words only).
        scope: code (default: implementation; tests or docs too when the query asks for them),
        tests (tests and fixtures), docs (documentation and examples) or all.
        Each hit has the file path, line range, symbol, snippet, score, its rank in each method and
        its file's role (code, test, fixture, example, docs).
        """
        return await _call(svc(ctx).search(query, repository, language, path_prefix, limit, mode, scope))

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
        """Liveness: 200 while the process serves; job figures when the database answers quickly."""
        body: dict[str, Any] = {"status": "ok", "active_jobs": None, "oldest_running_job_seconds": None}
        service: IndexingService | None = holder.get("service")
        if service is not None:
            try:
                async with asyncio.timeout(HEALTH_DB_TIMEOUT_SECONDS):
                    summary = await job_summary(service.engine)
                body["active_jobs"] = summary.active
                oldest = summary.oldest_running_seconds
                body["oldest_running_job_seconds"] = round(oldest, 1) if oldest is not None else None
            except Exception as error:  # liveness must not fail on a database outage (readyz does)
                body["database"] = f"unreachable: {type(error).__name__}"
        return JSONResponse(body)

    async def metrics(_request: Request) -> Response:
        collector: StateCollector | None = holder.get("collector")
        if collector is not None:
            await collector.refresh()
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def readyz(_request: Request) -> JSONResponse:
        service: IndexingService | None = holder.get("service")
        if service is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        ready, report = await readiness(service)
        return JSONResponse({"status": "ready" if ready else "degraded", **report}, status_code=200 if ready else 503)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with running_service(settings) as service, exported_state(service) as collector:
            holder["service"] = service
            holder["collector"] = collector
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
    # With a token set, everything but the probes needs it (see server/auth.py).
    token = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Mount("/", app=mcp_app),
        ],
        middleware=[Middleware(BearerTokenMiddleware, token=token)] if token else [],
        lifespan=lifespan,
    )


def serve_http(settings: Settings, host: str, port: int) -> None:
    if settings.auth_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving HTTP on %s without CODEBASE_MCP_AUTH_TOKEN: anyone who can reach it may use it", host)
    # log_config=None: uvicorn's loggers propagate to the root handler (one format, credentials masked).
    uvicorn.run(build_http_app(settings), host=host, port=port, log_level="warning", lifespan="on", log_config=None)


def serve_stdio(settings: Settings) -> None:
    build_server(settings).run()
