"""What the MCP tools and the CLI do, in one place: validation, job rules, search, resume.

One :class:`IndexingService` per process, opened on the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import dramatiq
import pika
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from actors.broker import setup_broker
from actors.dispatch import dispatch_window, promote_and_plan, publish, redispatch_stale, start_planning
from actors.embedders import (
    Embedder,
    EmbedderUnavailableError,
    build_query_embedder,
    configured_dimension_async,
    configured_name,
)
from actors.embedders.ollama import probe_dimension
from actors.messages import plan_message
from actors.scanning import ALL_LANGUAGES, LANGUAGES, UnresolvablePathError, resolve_repo_path
from models import jobs, repositories, stalls
from models.database import create_engine, resolve_database_url
from models.lifecycle import JOB_STATUSES
from models.logs import redact
from models.migrate import upgrade_to_head
from models.roles import ROLES, SCOPES, roles_for
from models.settings import Settings
from server.errors import BrokerUnavailableError, InvalidStateError, NotFoundError, ValidationError
from server.local_broker import LocalBroker
from server.schemas import (
    DeletedRepository,
    JobList,
    JobStatus,
    Repository,
    RepositoryList,
    SearchHit,
    SearchResult,
    StartResult,
    WatchResult,
    iso,
)
from server.search import SEARCH_MODES, Filters, Hit, SearchMode, VectorQuery, run_search
from server.supervisor import WorkerNote
from server.watcher import stale_marks

logger = logging.getLogger(__name__)

MAX_SEARCH_LIMIT = 100
EMPTY_INDEX_MESSAGE = (
    "nothing is indexed yet: index a repository with start_indexing_background(repo_path) "
    "(CLI: codebase-mcp index PATH), follow it with get_indexing_status, then search again"
)
#: Language names the scanner assigns, and what people also call them ("py", "ts", "golang").
KNOWN_LANGUAGES = ALL_LANGUAGES
LANGUAGE_ALIASES = {ext.removeprefix("."): name for ext, name in LANGUAGES.items()} | {
    "golang": "go",
    "js": "javascript",
    "ts": "typescript",
    "c++": "cpp",
    "c#": "csharp",
}
#: The message a job is admitted with, until a planner picks it up (models/jobs.py).
WAITING_FOR_WORKER = "scanning: waiting for a worker"
#: What publishing raises when RabbitMQ is gone (Dramatiq wraps pika's errors, not always).
BROKER_ERRORS = (dramatiq.errors.BrokerConnectionError, pika.exceptions.AMQPError, OSError)


def broker_fix(problem: str) -> str:
    """The error text for an unreachable RabbitMQ: what is wrong and the commands that fix it."""
    return (
        f"{problem}: start it with `codebase-mcp setup` (or `bash rabbitmq/ensure-rabbitmq.sh`), "
        "or fix CODEBASE_MCP_BROKER_URL; `codebase-mcp doctor` checks every service"
    )


#: A running job still unplanned this long lost its plan message (crash between commit and publish).
STALE_PLAN_SECONDS = 30.0
MAX_LIST_LIMIT = 500


#: Longest path accepted (PATH_MAX on Linux); longer ones cannot name a directory anyway.
MAX_PATH_CHARS = 4096
#: Longest search query, name or filter accepted; a query is embedded whole, so this bounds its cost.
MAX_QUERY_CHARS = 8000
MAX_FILTER_CHARS = 1000


def shown(value: object, limit: int = 120) -> str:
    """``repr(value)`` for an error message: at most ``limit`` characters, and always valid UTF-8."""
    text = repr(value)
    if len(text) > limit:
        text = f"{text[: limit - 15]}…({len(text)} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validate_text(name: str, value: object, *, max_chars: int, allow_empty: bool = False) -> str:
    """``value`` if it is a string PostgreSQL can store and an embedder can take; else a ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if len(value) > max_chars:
        raise ValidationError(f"{name} is {len(value):,} characters long; at most {max_chars:,} are accepted")
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{name} is not valid Unicode (it contains a lone surrogate)") from None
    return value


def validate_limit(limit: object, maximum: int) -> int:
    """``limit`` as an int in ``1..maximum``; booleans and other types are refused, not coerced."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationError(f"limit must be an integer, not {type(limit).__name__}")
    if not 1 <= limit <= maximum:
        raise ValidationError(f"limit must be between 1 and {maximum} (got {shown(limit, 40)})")
    return limit


def parse_job_id(job_id: object) -> uuid.UUID:
    """A job id in any form :class:`uuid.UUID` reads (hyphens, braces, ``urn:uuid:``, any case)."""
    try:
        if not isinstance(job_id, str) or len(job_id) > 100:
            raise ValueError
        return uuid.UUID(job_id.strip())
    except ValueError:
        raise ValidationError(
            f"job_id {shown(job_id, 80)} is not a valid UUID (expected 36 characters like "
            "'123e4567-e89b-12d3-a456-426614174000')"
        ) from None


def _display_path(path: str) -> str:
    """A path as shown in an error: valid UTF-8 and at most about 300 characters."""
    display = path.encode("utf-8", "backslashreplace").decode("utf-8")
    return display if len(display) <= 300 else display[:280] + f"…({len(display)} chars)"


def _resolve(candidate: Path, shown_path: str) -> Path:
    """``candidate`` with symlinks and ``..`` resolved; a loop or an unusable name is a ValidationError."""
    try:
        return resolve_repo_path(candidate, shown_path)
    except UnresolvablePathError as error:
        raise ValidationError(str(error)) from None


def validate_repo_path(repo_path: object, allowed_roots: list[Path]) -> Path:
    """Resolve ``repo_path`` and check it is a readable directory inside the allowed roots.

    The path is resolved (symlinks, ``..``) before the roots are checked, so neither a symlink nor
    ``..`` can lead outside them; the roots are resolved the same way.
    """
    if not isinstance(repo_path, str) or not repo_path.strip():
        raise ValidationError("repo_path must be a non-empty path to a directory")
    validate_text("repo_path", repo_path, max_chars=MAX_PATH_CHARS)
    display = _display_path(repo_path)
    try:
        candidate = Path(repo_path).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist
        raise ValidationError(f"repo_path {shown(repo_path)}: cannot expand the home directory") from None
    if not candidate.is_absolute():
        raise ValidationError(f"repo_path {shown(repo_path)} must be absolute")
    roots = [root.resolve() for root in allowed_roots]

    def outside(path: Path) -> ValidationError:
        return ValidationError(
            f"repository path {_display_path(str(path))} is outside the allowed roots "
            f"({', '.join(str(r) for r in allowed_roots)}); set CODEBASE_MCP_ALLOWED_ROOTS to allow it"
        )

    try:
        resolved = _resolve(candidate, display)
    except ValidationError:
        # Say nothing about an unresolvable path that is not even lexically inside the roots.
        lexical = Path(os.path.normpath(candidate))
        if roots and not any(lexical.is_relative_to(root) for root in roots):
            raise outside(lexical) from None
        raise
    # Roots first, so that nothing is revealed about paths outside them.
    if roots and not any(resolved.is_relative_to(root) for root in roots):
        raise outside(resolved)
    try:
        exists, is_dir = resolved.exists(), resolved.is_dir()
    except OSError as error:
        raise ValidationError(f"repository path {display} cannot be checked: {error.strerror or error}") from None
    if not exists:
        raise ValidationError(f"repository path {display} not found")
    if not is_dir:
        raise ValidationError(f"repository path {display} is not a directory")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise ValidationError(f"repository path {display} is not readable by the server")
    return resolved


def normalize_filter_path(repo_path: object) -> str:
    """A ``repo_path`` filter as stored on jobs (resolved when it can be); never raises but ValidationError."""
    text = validate_text("repo_path", repo_path, max_chars=MAX_PATH_CHARS)
    try:
        return str(Path(text).expanduser().resolve())
    except (OSError, RuntimeError):
        return text  # matches nothing stored (stored paths resolve), which is the honest answer


class IndexingService:
    """Database-backed operations behind every tool. Create with :meth:`open`."""

    def __init__(self, settings: Settings, engine: AsyncEngine, dimension: int) -> None:
        self.settings = settings
        self.engine = engine
        self.dimension = dimension
        #: Query embedders by (embedder name, dimension): one per model the searched repositories use.
        self._embedders: dict[tuple[str, int], Embedder] = {}
        self._embedder_lock = asyncio.Lock()
        self._worker_note = WorkerNote(settings)
        #: Set when this process turns a watch on or off, so its watcher (server/watcher.py) looks at once.
        self.watches_changed = asyncio.Event()
        #: Starts this machine's RabbitMQ when its port is found closed (server/local_broker.py).
        self.local_broker = LocalBroker(settings, self.broker_problem)

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[IndexingService]:
        """Start the embedded database if needed, migrate, connect; close everything on exit."""
        setup_broker(settings)  # what publishing uses: the workers' RabbitMQ
        url = await asyncio.to_thread(resolve_database_url, settings)
        dimension = await configured_dimension_async(settings)
        await upgrade_to_head(url, dimension)
        engine = create_engine(url, pool_size=10, idle_in_transaction_seconds=settings.db_idle_in_transaction_seconds)
        service = cls(settings, engine, dimension)
        try:
            yield service
        finally:
            await service.local_broker.aclose()
            for embedder in service._embedders.values():
                await embedder.aclose()
            await engine.dispose()

    # --- jobs -------------------------------------------------------------------------------

    async def start_indexing(self, repo_path: str, name: str | None = None, *, watch: bool = False) -> StartResult:
        """Admit (or return the active) job for ``repo_path``; ``watch`` also keeps it fresh on every save."""
        resolved = validate_repo_path(repo_path, self.settings.allowed_roots)
        if name is not None:
            validate_text("name", name, max_chars=MAX_FILTER_CHARS, allow_empty=True)
        job_name = (name or resolved.name).strip() or resolved.name
        if len(job_name) > 200:
            raise ValidationError("name must be at most 200 characters")
        # Before admitting: with RabbitMQ down the job could not be handed to a worker, and pika's
        # retries would hold the call for about a minute.
        await self.require_broker()
        for _ in range(3):
            try:
                async with self.engine.begin() as conn:
                    jobs.bind_limits(conn, max_concurrent_jobs=self.settings.max_concurrent_jobs)
                    admission = await jobs.admit_job(conn, repo_path=str(resolved), name=job_name)
                    if watch:
                        await repositories.watch_path(conn, str(resolved))
                break
            except IntegrityError:
                # Another process admitted a job for the same repository at the same moment; return it.
                continue
        else:
            raise InvalidStateError(f"could not admit a job for {resolved}; retry")
        if admission.status == "running" and not admission.existing:
            # After the commit, so the planner finds the job; a crash in between is healed by resume/upkeep.
            try:
                await publish(plan_message(admission.job_id))
            except BROKER_ERRORS as error:
                # RabbitMQ went away since the probe: fail the job rather than leave it holding a
                # running slot with no plan message, for as long as the broker stays down.
                problem = f"{self._broker_location()} is unreachable ({type(error).__name__})"
                async with self.engine.begin() as conn:
                    await jobs.fail_job(conn, admission.job_id, f"could not hand the job to the workers: {problem}")
                raise BrokerUnavailableError(broker_fix(problem)) from None
        if watch:
            self.watches_changed.set()
        return StartResult(
            job_id=str(admission.job_id),
            status=admission.status,
            existing=admission.existing,
            repo_path=str(resolved),
        )

    async def status(self, job_id: str) -> JobStatus:
        parsed = parse_job_id(job_id)
        async with self.engine.connect() as conn:
            try:
                row = await jobs.get_job(conn, parsed)
            except jobs.JobNotFoundError as error:
                raise NotFoundError(str(error)) from None
        result = JobStatus.from_row(row, datetime.now(UTC))
        # Still as admitted (models/jobs.py's message): no worker has picked the job up yet.
        if result.status == "running" and row["progress_message"] == WAITING_FOR_WORKER:
            note = await self._worker_note.get()
            if note is not None:
                result = result.model_copy(update={"progress_message": f"{result.progress_message}; {note}"})
        return result

    def _broker_location(self) -> str:
        parts = urlsplit(self.settings.broker_url)
        return f"RabbitMQ at {parts.hostname}:{parts.port or 5672}"

    async def broker_problem(self) -> str | None:
        """Why RabbitMQ's port does not answer within BROKER_PROBE_TIMEOUT_SECONDS, or None when it does."""
        parts = urlsplit(self.settings.broker_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 5672
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=self.settings.broker_probe_timeout_seconds
            )
        except TimeoutError:
            return f"{self._broker_location()} does not answer within {self.settings.broker_probe_timeout_seconds}s"
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else type(error).__name__
            return f"{self._broker_location()} is unreachable ({reason.lower()})"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def broker_problem_after_start(self) -> str | None:
        """:meth:`broker_problem`, but a closed local broker this server may start is started (and
        waited on, see server/local_broker.py) first; None once RabbitMQ answers."""
        problem = await self.broker_problem()
        if problem is None:
            return None
        return await self.local_broker.recover(problem)

    async def require_broker(self) -> None:
        """Raise :class:`BrokerUnavailableError` (naming the fix) when RabbitMQ's port is closed: at
        once, or, for a local broker this server may start, after waiting on that start."""
        problem = await self.broker_problem_after_start()
        if problem is not None:
            raise BrokerUnavailableError(broker_fix(problem))

    async def cancel(self, job_id: str) -> JobStatus:
        parsed = parse_job_id(job_id)
        async with self.engine.begin() as conn:
            try:
                row = await jobs.cancel_job(conn, parsed)
            except jobs.JobNotFoundError as error:
                raise NotFoundError(str(error)) from None
            except jobs.JobStateError as error:
                raise InvalidStateError(str(error)) from None
        # With RabbitMQ down the cancel still stands; upkeep starts the next pending job later.
        if await self.broker_problem() is None:
            await promote_and_plan(self.engine, self.settings.max_concurrent_jobs)
        return JobStatus.from_row(row, datetime.now(UTC))

    async def list_jobs(
        self,
        status: str | None = None,
        repo_path: str | None = None,
        created_after: str | None = None,
        limit: int = 50,
    ) -> JobList:
        if status is not None and status not in JOB_STATUSES:
            raise ValidationError(f"status {shown(status)} is not one of {', '.join(JOB_STATUSES)}")
        validate_limit(limit, MAX_LIST_LIMIT)
        after = None
        if created_after:
            validate_text("created_after", created_after, max_chars=100)
            try:
                after = datetime.fromisoformat(created_after)
            except ValueError:
                raise ValidationError(f"created_after {shown(created_after)} is not an ISO-8601 timestamp") from None
            if after.tzinfo is None:
                after = after.replace(tzinfo=UTC)
        path = normalize_filter_path(repo_path) if repo_path else None
        async with self.engine.connect() as conn:
            rows = await jobs.list_jobs(conn, status=status, repo_path=path, created_after=after, limit=limit)
        now = datetime.now(UTC)
        return JobList(jobs=[JobStatus.from_row(row, now) for row in rows])

    # --- recovery ----------------------------------------------------------------------------

    async def resume(self) -> list[uuid.UUID]:
        """After a restart: re-plan unplanned live jobs, refill windows, start pending jobs.

        Messages of dispatched batches are still in RabbitMQ (durable queues, persistent messages,
        unacked deliveries of killed workers are requeued), so they are not sent again here;
        :meth:`reap` re-sends only those that stay idle past ``STALE_BATCH_SECONDS``.
        """
        async with self.engine.begin() as conn:
            running = await jobs.live_jobs(conn)
            unplanned = [job_id for job_id, planned in running if not planned]
            for job_id, planned in running:
                await jobs.add_event(conn, job_id, "resumed")
                if planned:
                    await dispatch_window(conn, job_id, self.settings.batches_in_flight)
        await start_planning(unplanned)
        started = await promote_and_plan(self.engine, self.settings.max_concurrent_jobs)
        if running or started:
            logger.info("resumed %d running job(s), started %d pending job(s)", len(running), len(started))
        return [job_id for job_id, _ in running]

    async def reap(self) -> None:
        """Periodic upkeep: re-send lost batch messages, start pending jobs, purge old finished jobs,
        fail jobs blocked past the timeout."""
        async with self.engine.begin() as conn:
            stale_seconds = self.settings.stale_batch_seconds
            await stalls.note_stalls(
                conn, quiet_seconds=self.settings.stall_notice_seconds, stale_batch_seconds=stale_seconds
            )
            resent = await redispatch_stale(conn, older_than_seconds=stale_seconds)
            await stalls.note_redispatched(conn, resent, stale_batch_seconds=stale_seconds)
            unplanned = await jobs.stale_unplanned(conn, older_than_seconds=STALE_PLAN_SECONDS)
            purged = await jobs.purge_finished(conn, older_than_days=self.settings.job_retention_days)
            # Normally the blocked batches fail their job themselves; this covers a job whose
            # delayed messages were lost, so that no job waits forever.
            overdue = await jobs.fail_overdue_blocked(
                conn, timeout_seconds=self.settings.blocked_timeout_seconds + STALE_PLAN_SECONDS
            )
        await start_planning(unplanned)
        await promote_and_plan(self.engine, self.settings.max_concurrent_jobs)
        if overdue:
            logger.warning("upkeep: %d job(s) blocked past the timeout failed", len(overdue))
        if resent or purged:
            logger.info("upkeep: %d stale batch(es) re-sent, %d finished job(s) purged", len(resent), purged)

    # --- search --------------------------------------------------------------------------------

    async def embedder(self, name: str | None = None, dimension: int | None = None) -> Embedder:
        """The query embedder for repositories indexed with ``name`` (default: the configured one)."""
        key = (name or configured_name(self.settings), dimension or self.dimension)
        async with self._embedder_lock:
            if key not in self._embedders:
                self._embedders[key] = build_query_embedder(self.settings, *key)
        return self._embedders[key]

    async def _embed_query(
        self, query: str, groups: list[EmbedderGroup]
    ) -> tuple[list[VectorQuery], list[tuple[EmbedderGroup, str]]]:
        """The query embedded once per model in scope, concurrently; and the groups whose embedder failed.

        A failing or slow embedder costs at most ``QUERY_EMBED_TIMEOUT_SECONDS``: its repositories
        are then searched by their words only, and the caller says so.
        """

        async def one(group: EmbedderGroup) -> VectorQuery:
            embedder = await self.embedder(group.embedder, group.dimension)
            async with asyncio.timeout(self.settings.query_embed_timeout_seconds):
                vectors = await embedder.embed([query])
            return VectorQuery(vectors[0], group.repository_ids)

        outcomes = await asyncio.gather(*(one(group) for group in groups), return_exceptions=True)
        embedded: list[VectorQuery] = []
        failed: list[tuple[EmbedderGroup, str]] = []
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, VectorQuery):
                embedded.append(outcome)
            elif isinstance(outcome, EmbedderUnavailableError | TimeoutError):
                reason = str(outcome) or f"no answer within {self.settings.query_embed_timeout_seconds:g} s"
                logger.warning("query embedding with %s failed: %s", group.embedder, reason)
                failed.append((group, redact(reason)))
            else:
                raise outcome
        return embedded, failed

    async def search(
        self,
        query: str,
        repository: str | None = None,
        language: str | None = None,
        path_prefix: str | None = None,
        limit: int = 10,
        mode: str = "hybrid",
        scope: str = "code",
    ) -> SearchResult:
        """Hybrid (semantic + full-text) search over indexed chunks; see :mod:`server.search`.

        ``scope`` (:data:`models.roles.SCOPES`) picks the file roles searched: ``code`` returns
        implementation first (tests and docs too when the query names them, see
        :func:`models.roles.roles_for`) and fills up with the other roles only when fewer than
        ``limit`` code chunks match.

        Raises:
            ValidationError: empty query, limit outside 1..100, unknown mode, scope or language, bad path prefix.
            NotFoundError: ``repository`` names no indexed repository (the message lists the known ones).
        """
        validate_text("query", query, max_chars=MAX_QUERY_CHARS)
        for label, value in (("repository", repository), ("language", language), ("path_prefix", path_prefix)):
            if value is not None:
                validate_text(label, value, max_chars=MAX_FILTER_CHARS, allow_empty=True)
        validate_limit(limit, MAX_SEARCH_LIMIT)
        if mode not in SEARCH_MODES:
            raise ValidationError(f"mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
        if scope not in SCOPES:
            raise ValidationError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        search_mode: SearchMode = mode  # type: ignore[assignment]
        roles = roles_for(scope, query)  # type: ignore[arg-type]
        prefix = normalize_path_prefix(path_prefix)
        async with self.engine.connect() as conn:
            if not await conn.scalar(text("SELECT EXISTS (SELECT 1 FROM chunks)")):
                return SearchResult(query=query, mode=mode, results=[], message=EMPTY_INDEX_MESSAGE)
            repository_ids = None
            if repository is not None:
                repository_ids = [row.id for row in await self._find_repositories(conn, repository)]
            language_name, note = await self._check_language(conn, language, repository_ids)
        if note is not None:
            return SearchResult(query=query, mode=mode, results=[], message=note)
        vectors: list[VectorQuery] = []
        failed: list[tuple[EmbedderGroup, str]] = []
        if search_mode != "text":
            async with self.engine.connect() as conn:
                groups = await embedder_groups(conn, repository_ids, configured_name(self.settings), self.dimension)
            vectors, failed = await self._embed_query(query, groups)
            if failed and not vectors:
                search_mode = "text"  # nothing to search by meaning: words are better than an error
        filters = Filters(repository_ids=repository_ids, language=language_name, path_prefix=prefix, roles=roles)
        async with self.engine.begin() as conn:
            hits = await run_search(conn, query=query, vectors=vectors, filters=filters, limit=limit, mode=search_mode)
            rest = tuple(role for role in ROLES if role not in roles)
            if scope == "code" and len(hits) < limit and rest:
                # Ranked below all code: a repository of scripts and docs still answers.
                others = replace(filters, roles=rest)
                hits += await run_search(
                    conn, query=query, vectors=vectors, filters=others, limit=limit - len(hits), mode=search_mode
                )
        # Only the returned hits' files are checked (server/watcher.py): a stat each, a hash when modified since.
        stale = await self._stale_marks(hits)
        notes: list[str] = []
        async with self.engine.connect() as conn:
            coverage = await jobs.live_coverage(conn, repository_ids)
        if coverage:
            notes.append(coverage_note(coverage, semantic=search_mode != "text"))
        if failed:
            notes.append(_embedder_failure_note(failed, fell_back=not vectors))
        if not hits:
            empty = "no chunk matches the query and filters"
            if search_mode == "text":
                empty += " (text mode needs at least one of the words in the code; try mode 'hybrid')"
            notes.append(empty)
        message = "; ".join(notes) or None
        mode = search_mode
        return SearchResult(
            query=query,
            mode=mode,
            results=[
                SearchHit(
                    repository=hit.repository,
                    repository_path=hit.repository_path,
                    file_path=hit.file_path,
                    start_line=hit.start_line,
                    end_line=hit.end_line,
                    language=hit.language,
                    symbol=hit.symbol,
                    snippet=hit.content,
                    score=round(hit.score, 6),
                    vector_rank=hit.vector_rank,
                    text_rank=hit.text_rank,
                    role=hit.role,
                    stale=stale.get((hit.repository_path, hit.file_path)),
                )
                for hit in hits
            ],
            message=message,
        )

    async def _find_repositories(self, conn: AsyncConnection, reference: str) -> list[repositories.RepositoryRow]:
        if not isinstance(reference, str) or not reference.strip():
            raise ValidationError("repository must be a repository name or path (list_repositories shows them)")
        reference = reference.strip()
        resolved = None
        try:
            expanded = Path(reference).expanduser()
            if expanded.is_absolute():
                resolved = str(expanded.resolve())
        except RuntimeError:  # "~someone" for a user that does not exist, or a symlink loop
            if reference.startswith("~"):
                raise ValidationError(
                    f"repository {shown(reference)}: cannot expand the home directory (no such user); "
                    "pass the repository's name or absolute path (list_repositories shows them)"
                ) from None
        except OSError:
            pass  # an unresolvable path can still equal a stored one, or a name
        found = await repositories.find_repositories(conn, reference, resolved)
        if not found:
            known = await repositories.known_names(conn)
            listing = ", ".join(known) if known else "none"
            raise NotFoundError(
                f"repository {reference!r} not found; indexed repositories: {listing} "
                "(list_repositories shows them all)"
            )
        return found

    async def _check_language(
        self, conn: AsyncConnection, language: str | None, repository_ids: list[uuid.UUID] | None
    ) -> tuple[str | None, str | None]:
        """The canonical language name, and a message when no file of it is indexed in scope."""
        if language is None:
            return None, None
        wanted = language.strip().lower()
        wanted = LANGUAGE_ALIASES.get(wanted, wanted)
        indexed = await repositories.indexed_languages(conn)
        if wanted not in KNOWN_LANGUAGES and wanted not in indexed:
            raise ValidationError(
                f"language {language!r} is not a language name; indexed languages: {', '.join(indexed) or 'none'}"
            )
        in_scope = indexed if repository_ids is None else await repositories.indexed_languages(conn, repository_ids)
        if wanted not in in_scope:
            where = "in that repository" if repository_ids is not None else "in any repository"
            return wanted, f"no {wanted} file is indexed {where}; indexed languages: {', '.join(in_scope) or 'none'}"
        return wanted, None

    # --- repositories ------------------------------------------------------------------------

    async def list_repositories(self) -> RepositoryList:
        async with self.engine.connect() as conn:
            rows = await repositories.list_repositories(conn)
        return RepositoryList(repositories=[repository_model(row) for row in rows])

    async def delete_repository(self, repository: str) -> DeletedRepository:
        """Remove one repository's index (chunks, files, jobs, row).

        Raises:
            NotFoundError: no repository has that name or path.
            ValidationError: the name is shared by several repositories (pass the path).
            InvalidStateError: a job on it is pending, running or blocked.
        """
        async with self.engine.begin() as conn:
            found = await self._find_repositories(conn, repository)
            if len(found) > 1:
                raise ValidationError(
                    f"{len(found)} repositories are named {repository!r}: "
                    f"{', '.join(row.path for row in found)}; pass the path of the one to delete"
                )
            target = found[0]
            try:
                deleted = await repositories.delete_repository(conn, target.id)
            except repositories.RepositoryBusyError as error:
                raise InvalidStateError(
                    f"cannot delete repository {target.name} ({target.path}): {error}; "
                    "cancel it with cancel_indexing_background or wait for it to finish"
                ) from None
        logger.info(
            "deleted repository %s (%s): %d files, %d chunks", target.name, target.path, deleted.files, deleted.chunks
        )
        return DeletedRepository(
            name=target.name,
            path=target.path,
            files_deleted=deleted.files,
            chunks_deleted=deleted.chunks,
            jobs_deleted=deleted.jobs,
        )

    async def watch(self, repository: str, watched: bool = True) -> WatchResult:
        """Turn the watch of an indexed repository on (or off): re-indexed on every save, see server/watcher.py.

        Raises:
            NotFoundError: no repository has that name or path (index it first).
            ValidationError: the name is shared by several repositories, or (to watch) its directory
                is gone, not a directory, unreadable or outside the allowed roots.
        """
        async with self.engine.begin() as conn:
            try:
                found = await self._find_repositories(conn, repository)
            except NotFoundError as error:
                if not watched:
                    raise
                raise NotFoundError(
                    f"{error}. To index and watch a directory: start_indexing_background(repo_path, watch=true)"
                ) from None
            if len(found) > 1:
                raise ValidationError(
                    f"{len(found)} repositories are named {repository!r}: "
                    f"{', '.join(row.path for row in found)}; pass the path of the one to "
                    f"{'watch' if watched else 'unwatch'}"
                )
            target = found[0]
            if watched:
                try:
                    validate_repo_path(target.path, self.settings.allowed_roots)
                except ValidationError as error:
                    raise ValidationError(
                        f"cannot watch {target.name}: {str(error).removeprefix('validation error: ')}"
                    ) from None
            if target.watched != watched:
                await repositories.set_watched(conn, target.id, watched)
        self.watches_changed.set()
        logger.info("%s %s (%s)", "watching" if watched else "stopped watching", target.name, target.path)
        return WatchResult(
            name=target.name,
            path=target.path,
            watched=watched,
            changed=target.watched != watched,
            watch_caught_up_at=iso(target.watch_caught_up_at),
        )

    async def _stale_marks(self, hits: list[Hit]) -> dict[tuple[str, str], bool | None]:
        """``(repository path, file path) -> stale`` of the hits' files: changed on disk since indexed?"""
        if not hits:
            return {}
        keys = [(hit.repository_path, hit.file_path) for hit in hits]
        async with self.engine.connect() as conn:
            indexed = await repositories.indexed_files(conn, sorted(set(keys)))
        return await asyncio.to_thread(stale_marks, keys, indexed, self.settings.max_file_bytes)


@dataclass(frozen=True, slots=True)
class EmbedderGroup:
    """Repositories in a search's scope that were indexed with one embedder (name and dimension)."""

    embedder: str
    dimension: int
    repository_ids: list[uuid.UUID]
    names: list[str]


async def embedder_groups(
    conn: AsyncConnection, repository_ids: list[uuid.UUID] | None, default_embedder: str, default_dimension: int
) -> list[EmbedderGroup]:
    """The searched repositories that hold chunks, grouped by the embedder they were indexed with.

    A repository indexed before embedders were recorded is taken to use the configured one (as the
    planner does).
    """
    rows = await conn.execute(
        text(
            "SELECT r.id, r.name, r.embedder, r.dimension FROM repositories r"
            " WHERE (CAST(:ids AS uuid[]) IS NULL OR r.id = ANY(:ids))"
            " AND EXISTS (SELECT 1 FROM chunks c WHERE c.repository_id = r.id) ORDER BY r.name, r.id"
        ),
        {"ids": repository_ids},
    )
    groups: dict[tuple[str, int], EmbedderGroup] = {}
    for row in rows:
        key = (row.embedder or default_embedder, row.dimension or default_dimension)
        group = groups.setdefault(key, EmbedderGroup(key[0], key[1], [], []))
        group.repository_ids.append(row.id)
        group.names.append(row.name)
    return list(groups.values())


def _embedder_failure_note(failed: list[tuple[EmbedderGroup, str]], *, fell_back: bool) -> str:
    parts = [f"{group.embedder} ({', '.join(group.names)}): {reason}" for group, reason in failed]
    if fell_back:
        lead = "the embedding service did not answer, so these are full-text results (mode text)"
    else:
        lead = "semantic search was unavailable for some repositories, found by their words only"
    return f"{lead}; {'; '.join(parts)}"


def coverage_note(coverage: list[jobs.Coverage], *, semantic: bool) -> str:
    """``index in progress: gin: semantic 34 %, text 100 %``: what a search could reach of the
    repositories still being indexed (the others are searched whole)."""
    parts = [
        f"{item.name}: semantic {item.semantic_percentage if semantic else 0} %, text {item.searchable_percentage} %"
        for item in coverage
    ]
    return "index in progress: " + "; ".join(parts)


def normalize_path_prefix(path_prefix: str | None) -> str | None:
    """A repository-relative prefix with forward slashes, or ``None`` for no filter.

    Raises:
        ValidationError: absolute, containing ``..`` or a NUL byte.
    """
    if path_prefix is None:
        return None
    if not isinstance(path_prefix, str):
        raise ValidationError("path_prefix must be a string")
    prefix = path_prefix.strip().replace("\\", "/")
    if "\x00" in prefix:
        raise ValidationError("path_prefix contains a NUL byte")
    if prefix.startswith("/") or re.match(r"^[A-Za-z]:", prefix):
        raise ValidationError(
            f"path_prefix {path_prefix!r} must be relative to the repository root (like 'src/' or 'server/app')"
        )
    if ".." in prefix.split("/"):
        raise ValidationError(f"path_prefix {path_prefix!r} must not contain '..'")
    while prefix.startswith("./"):
        prefix = prefix[2:]
    return prefix or None


def repository_model(row: repositories.RepositoryRow) -> Repository:
    return Repository(
        name=row.name,
        path=row.path,
        files=row.files,
        chunks=row.chunks,
        languages=row.languages,
        created_at=iso(row.created_at) or "",
        last_indexed_at=iso(row.last_indexed_at),
        embedder=row.embedder,
        dimension=row.dimension,
        active_job_id=str(row.active_job_id) if row.active_job_id is not None else None,
        active_job_status=row.active_job_status,
        watched=row.watched,
        watch_caught_up_at=iso(row.watch_caught_up_at),
        watch_error=row.watch_error,
    )


#: ``/readyz`` tries RabbitMQ once, this long at most: the URL's own retries (5 attempts 2 s apart by
#: default) are for workers riding out a restart, and made a probe take 8 s while the broker was down.
BROKER_PROBE_TIMEOUT_SECONDS = 2.0


def broker_probe_parameters(url: str) -> pika.URLParameters:
    """The broker URL's parameters for one quick connection attempt."""
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.retry_delay = 0
    parameters.socket_timeout = BROKER_PROBE_TIMEOUT_SECONDS
    parameters.stack_timeout = BROKER_PROBE_TIMEOUT_SECONDS * 2
    parameters.blocked_connection_timeout = BROKER_PROBE_TIMEOUT_SECONDS
    return parameters


def _broker_reachable(url: str) -> str | None:
    try:
        connection = pika.BlockingConnection(broker_probe_parameters(url))
    except Exception as error:  # any failure means "not reachable"; the message says which
        # pika's connection errors often have an empty str(); the nested cause is in args.
        detail = str(error) or "; ".join(repr(arg) for arg in error.args) or "no detail"
        return f"{type(error).__name__}: {detail}"
    connection.close()
    return None


#: ``/readyz`` waits this long at most for its one embedding.
EMBEDDER_PROBE_TIMEOUT_SECONDS = 5.0


async def readiness(service: IndexingService) -> tuple[bool, dict[str, object]]:
    """What ``/readyz`` reports: database, broker and embedder reachable, active jobs, oldest run."""
    report: dict[str, object] = {}
    ready = True
    try:
        async with service.engine.connect() as conn:
            active, oldest = await jobs.activity(conn)
        report["database"] = "ok"
        report["active_jobs"] = active
        report["oldest_running_job_seconds"] = round(oldest, 1) if oldest is not None else None
    except Exception as error:  # reported, not raised: readiness must answer
        ready = False
        report["database"] = f"unreachable: {type(error).__name__}"
    broker_error = await asyncio.to_thread(_broker_reachable, service.settings.broker_url)
    report["broker"] = "ok" if broker_error is None else f"unreachable: {redact(broker_error)}"
    ready &= broker_error is None
    if service.settings.embedder == "ollama":
        # A real embedding of one word: a server can list its models yet fail to embed.
        try:
            await probe_dimension(
                service.settings.ollama_url,
                service.settings.ollama_model,
                timeout_seconds=EMBEDDER_PROBE_TIMEOUT_SECONDS,
            )
            report["embedder"] = "ok"
        except EmbedderUnavailableError as error:
            report["embedder"] = f"unreachable: {redact(str(error))}"
        ready &= report["embedder"] == "ok"
    else:
        report["embedder"] = "ok (bundled model)"
    return ready, report
