"""The MCP server: tool definitions and the two transports (stdio, streamable HTTP)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from pydantic import Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from models.database_watch import is_database_outage, revive_embedded_postgres
from models.logs import redact
from models.settings import Settings
from server.auth import BearerTokenMiddleware
from server.errors import CallerError, outage_message
from server.metrics import STATUS_QUERY_DURATION, TOOL_CALLS, TOOL_DURATION, StateCollector, job_summary
from server.schemas import (
    DeletedRepository,
    JobList,
    JobStatus,
    RepositoryList,
    SearchResult,
    StartResult,
    WatchResult,
)
from server.service import (
    MAX_FILTER_CHARS,
    MAX_LIST_LIMIT,
    MAX_PATH_CHARS,
    MAX_QUERY_CHARS,
    MAX_SEARCH_LIMIT,
    IndexingService,
    readiness,
)
from server.sessions import bound_sessions
from server.supervisor import background, supervised_workers
from server.watcher import watching

logger = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = (
    "Semantic code search over local repositories. Index a repository with start_indexing_background "
    "(returns at once with a job id), follow it with get_indexing_status, then ask search_code. "
    "list_repositories shows what is indexed. watch_repository (or start_indexing_background with watch=true) "
    "keeps a repository fresh on every save."
)
UPKEEP_INTERVAL_SECONDS = 30.0
#: How often a server that started with RabbitMQ down checks it again before resuming jobs.
BROKER_RETRY_SECONDS = 2.0

# Tool argument types. The descriptions and bounds go into each tool's input schema, which is all an
# agent sees of a parameter; ``strict``: ``true`` or ``"10"`` for a number is refused, not coerced.
# String lengths are published (``maxLength``) but checked by the service, whose message says how
# long the value was; number bounds are checked by the SDK against the schema itself.
RepoPath = Annotated[
    str,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_PATH_CHARS},
        description="Absolute path of the repository's root directory on the server's machine, e.g. /home/me/src/app",
    ),
]
JobName = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": 200},
        description="Display name of the repository; default: the directory's name",
    ),
]
JobId = Annotated[
    str,
    Field(
        strict=True,
        json_schema_extra={"maxLength": 100},
        description="Job id (a UUID) as returned by start_indexing_background or list_indexing_jobs",
    ),
]
JobStatusFilter = Annotated[
    Literal["pending", "running", "blocked", "completed", "failed", "cancelled"] | None,
    Field(description="Only jobs in this state; default: all"),
]
RepoPathFilter = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_PATH_CHARS},
        description="Only jobs of the repository at this absolute path",
    ),
]
CreatedAfter = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": 100},
        description="Only jobs created after this ISO-8601 time, e.g. 2026-11-30T12:00:00Z (no zone: UTC)",
    ),
]
JobLimit = Annotated[
    int, Field(strict=True, ge=1, le=MAX_LIST_LIMIT, description=f"Most jobs returned (1..{MAX_LIST_LIMIT})")
]
SearchQuery = Annotated[
    str,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_QUERY_CHARS},
        description='A question or description ("where are retries scheduled") or identifiers '
        '("getUserName"; "user name" finds it too)',
    ),
]
RepositoryFilter = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_FILTER_CHARS},
        description="Only this repository: its name or absolute path (see list_repositories); default: all",
    ),
]
LanguageFilter = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_FILTER_CHARS},
        description="Only files of this language, e.g. python, typescript, go",
    ),
]
PathPrefix = Annotated[
    str | None,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_FILTER_CHARS},
        description='Only files under this path, relative to the repository root, e.g. "src/api/"',
    ),
]
SearchLimit = Annotated[
    int, Field(strict=True, ge=1, le=MAX_SEARCH_LIMIT, description=f"Most hits returned (1..{MAX_SEARCH_LIMIT})")
]
SearchModeArgument = Annotated[
    Literal["hybrid", "vector", "text"],
    Field(
        description="hybrid: semantic and full-text results fused by reciprocal rank; vector: semantic only; "
        "text: words only",
    ),
]
SearchScope = Annotated[
    Literal["code", "tests", "docs", "all"],
    Field(
        description="code (default): the implementation first, tests or docs too when the query asks for them; "
        "tests: tests and fixtures; docs: documentation and examples; all: every file",
    ),
]
RepositoryReference = Annotated[
    str,
    Field(
        strict=True,
        json_schema_extra={"maxLength": MAX_FILTER_CHARS},
        description="Name or absolute path of an indexed repository (see list_repositories)",
    ),
]
WatchFlag = Annotated[
    bool,
    Field(
        strict=True,
        description="Also watch the repository: re-indexed (incrementally) a moment after every save, "
        "across server restarts, until unwatch_repository",
    ),
]
HEALTH_DB_TIMEOUT_SECONDS = 2.0


class ToolMetrics(ServerMiddleware[Any]):
    """Counts and times every ``tools/call``; unknown tool names share the label ``unknown``."""

    def __init__(self, known_tools: Callable[[], Collection[str]]) -> None:
        self._known_tools = known_tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name") if ctx.params else None
        tool = name if isinstance(name, str) and name in self._known_tools() else "unknown"
        start = time.perf_counter()
        outcome = "exception"
        try:
            result = await call_next(ctx)
            match result:
                case CallToolResult(is_error=True) | {"isError": True}:
                    outcome = "error"
                case _:
                    outcome = "ok"
            return result
        finally:
            TOOL_CALLS.labels(tool, outcome).inc()
            TOOL_DURATION.labels(tool, outcome).observe(time.perf_counter() - start)


async def _upkeep(service: IndexingService) -> None:
    while True:
        await asyncio.sleep(UPKEEP_INTERVAL_SECONDS)
        try:
            # A local RabbitMQ that stopped since start-up is started again (server/local_broker.py).
            await service.broker_problem_after_start()
            await service.reap()
        except Exception as error:  # upkeep must outlive a database blip; the next round retries
            logger.exception("upkeep round failed")
            if is_database_outage(error):
                await revive_embedded_postgres(service.settings)


async def _broker_answers(service: IndexingService) -> None:
    """Return once RabbitMQ's port answers, starting the local broker if this server may."""
    said = None
    while (problem := await service.broker_problem_after_start()) is not None:
        if problem != said:
            logger.warning("interrupted jobs resume once RabbitMQ answers: %s", problem)
            said = problem
        await asyncio.sleep(BROKER_RETRY_SECONDS)


async def _resume_then_keep_up(service: IndexingService, *, resumed: bool) -> None:
    """Resume interrupted jobs (unless done already), then run the watcher and upkeep until cancelled."""
    while not resumed:
        await _broker_answers(service)
        try:
            await service.resume()
            resumed = True
        except Exception:  # the broker or database went away again: wait for them and retry
            logger.exception("resuming interrupted jobs failed; retrying")
            await asyncio.sleep(BROKER_RETRY_SECONDS)
    # After resume: a watch's catch-up job must not race the re-planning of interrupted jobs.
    async with watching(service):
        await _upkeep(service)


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[IndexingService]:
    """Open the service, resume interrupted jobs, keep upkeep and the local worker pool running while open.

    With RabbitMQ answering, jobs are resumed before the first request. With it down (a reboot
    stopped the local one), the server answers at once and resumes in the background once the
    broker it starts (server/local_broker.py) is up: resuming publishes, and must not fail start-up.
    """
    async with IndexingService.open(settings) as service, supervised_workers(settings):
        broker_up = await service.broker_problem() is None
        if broker_up:
            await service.resume()
        async with background(_resume_then_keep_up(service, resumed=broker_up), "resume-and-upkeep"):
            yield service


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
        raise ToolError(redact(str(error))) from None
    except Exception as error:
        # A dependency down is named (its kind only, no connection detail); anything else stays an
        # UnexpectedToolError: the SDK logs it (masked) and the client sees "Error executing tool <name>".
        message = outage_message(error)
        if message is None:
            raise
        logger.warning("tool call failed: %s (%s)", message, redact(str(error).splitlines()[0] if str(error) else ""))
        raise ToolError(message) from None


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

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    async def start_indexing_background(
        repo_path: RepoPath, ctx: Context[Any, Any], name: JobName = None, watch: WatchFlag = False
    ) -> StartResult:
        """Start indexing a repository in the background and return at once with its job id.

        A repository that already has a pending or running job gets that job back. At most
        MAX_CONCURRENT_JOBS run at once; later jobs wait as 'pending' and start by themselves.
        With watch=true the repository is also kept fresh on every save (see watch_repository).
        """
        return await _call(svc(ctx).start_indexing(repo_path, name, watch=watch))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def get_indexing_status(job_id: JobId, ctx: Context[Any, Any]) -> JobStatus:
        """Status of one indexing job: state, phase, progress (never decreasing), counters, timestamps, ETA."""
        with STATUS_QUERY_DURATION.time():
            return await _call(svc(ctx).status(job_id))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    async def cancel_indexing_background(job_id: JobId, ctx: Context[Any, Any]) -> JobStatus:
        """Cancel a pending or running job. Work already stored is kept; workers stop within seconds."""
        return await _call(svc(ctx).cancel(job_id))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_indexing_jobs(
        ctx: Context[Any, Any],
        status: JobStatusFilter = None,
        repo_path: RepoPathFilter = None,
        created_after: CreatedAfter = None,
        limit: JobLimit = 50,
    ) -> JobList:
        """Indexing jobs, newest first; filter by status, repository path and creation time (ISO-8601)."""
        return await _call(svc(ctx).list_jobs(status, repo_path, created_after, limit))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def search_code(
        query: SearchQuery,
        ctx: Context[Any, Any],
        repository: RepositoryFilter = None,
        language: LanguageFilter = None,
        path_prefix: PathPrefix = None,
        limit: SearchLimit = 10,
        mode: SearchModeArgument = "hybrid",
        scope: SearchScope = "code",
    ) -> SearchResult:
        """Search indexed code by meaning and by words; best chunks first.

        Each hit has the file path, line range, symbol, snippet, score, its rank in each method and
        its file's role (code, test, fixture, example, docs). Repositories indexed with different
        embedders are searched with each one's own model.
        """
        return await _call(svc(ctx).search(query, repository, language, path_prefix, limit, mode, scope))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_repositories(ctx: Context[Any, Any]) -> RepositoryList:
        """Indexed repositories: name, path, file and chunk counts, languages, last indexed, embedder, active job."""
        return await _call(svc(ctx).list_repositories())

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False))
    async def delete_repository(repository: RepositoryReference, ctx: Context[Any, Any]) -> DeletedRepository:
        """Remove a repository's index (files, chunks, finished jobs) by name or path; the files on disk stay.

        Refused while a job on it is pending, running or blocked: cancel it first.
        """
        return await _call(svc(ctx).delete_repository(repository))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    async def watch_repository(repository: RepositoryReference, ctx: Context[Any, Any]) -> WatchResult:
        """Keep an indexed repository fresh: every save re-indexes what changed, a moment later (no call needed).

        One job at a time per repository: saves during a job are covered by one follow-up job. The watch
        is stored and survives server restarts; it first catches up with changes made while nobody
        watched. list_repositories shows watched, watch_caught_up_at and watch_error.
        """
        return await _call(svc(ctx).watch(repository, True))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    async def unwatch_repository(repository: RepositoryReference, ctx: Context[Any, Any]) -> WatchResult:
        """Stop re-indexing a repository on save; its index and any running job are left as they are."""
        return await _call(svc(ctx).watch(repository, False))

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
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        host=settings.http_host,
        session_idle_timeout=settings.http_session_idle_seconds,
        max_sessions=settings.http_max_sessions,
    )
    bound_sessions(mcp.session_manager)
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
    # The SDK's DNS-rebinding check must follow the address bound (`--host`), not HTTP_HOST: else a
    # server bound to another host's address refuses every client that uses that address.
    app = build_http_app(settings.model_copy(update={"http_host": host}))
    # log_config=None: uvicorn's loggers propagate to the root handler (one format, credentials masked).
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on", log_config=None)


def serve_stdio(settings: Settings) -> None:
    build_server(settings).run()
