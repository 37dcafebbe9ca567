"""Watched repositories: fresh on every save, one incremental job at a time per repository.

A repository is watched when its ``repositories.watched`` flag is set (``watch_repository``,
``start_indexing_background(..., watch=true)``, ``codebase-mcp index --watch``). The flag is stored,
so the watch outlives any one server. Each watched repository is run by exactly one process per
broker vhost and database: the one holding its *watch lease*, an ``flock`` like the worker pool's
(server/supervisor.py) and for the same reason, the kernel drops it the instant its holder dies, so
another server (each tries every ``WATCH_POLL_SECONDS``) takes over within about a second. One
lease per repository rather than one for all: ``codebase-mcp index --watch`` can watch its one
repository next to a server without taking every other watch away from it.

The process that runs a watch follows the directory with ``watchfiles`` (inotify on Linux) and,
once nothing relevant changed for ``WATCH_DEBOUNCE_MS``, starts an incremental job through the
service's ordinary admission (:meth:`IndexingService.start_indexing`). While that job runs, new
changes only mark the repository dirty: when the job ends, exactly one follow-up job covers them
all, however many saves there were. A job someone else started is waited for, then followed by
the watch's own one, since that job may have scanned the tree before the change. Changes the
index ignores anyway (``.git/``, ignored directories and ``.gitignore`` matches, binary files,
nested repositories) are dropped with the scanner's own rules (:mod:`actors.scanning`).

When a process starts watching it first runs one job to catch up with what changed while nobody
watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from watchfiles import Change, awatch

from actors.scanning import BINARY_EXTENSIONS, IGNORED_DIRS, IgnoreRules
from models import repositories
from models.logs import redact
from models.settings import Settings
from server.errors import CallerError, NotFoundError, outage_message
from server.supervisor import Lease, background, pool_key

if TYPE_CHECKING:
    from server.schemas import JobStatus
    from server.service import IndexingService

logger = logging.getLogger(__name__)

#: How often a process checks which repositories are watched and tries the leases it lacks.
WATCH_POLL_SECONDS = 1.0
#: How often the end of a job is looked for.
JOB_POLL_SECONDS = 0.2
#: A repository that never stops changing (a log written every few ms) is re-indexed this often anyway.
MAX_DELAY_SECONDS = 10.0
#: How often a watch checks that its root is still the directory it watches.
ROOT_CHECK_SECONDS = 5.0
#: Backoff after a failure to watch or to start a job: from the first value, doubling, up to the cap.
RETRY_SECONDS = (1.0, 30.0)
TERMINAL = ("completed", "failed", "cancelled")


def watch_lease(settings: Settings, repository_path: str) -> Lease:
    """The lease on one repository's watch, for this broker vhost and database (see the module docstring)."""
    digest = hashlib.sha256(repository_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Lease(settings.data_dir / "watch" / f"watch-{pool_key(settings)}-{digest}.lock")


class ChangeFilter:
    """Whether a change under ``root`` can alter the index: the scanner's rules, not a copy of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rules = IgnoreRules(root)

    def __call__(self, _change: Change, path: str) -> bool:
        try:
            relative = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return False
        if relative == ".":
            return True  # the root itself (deleted, replaced): the watch must notice
        parts = relative.split("/")
        if any(part in IGNORED_DIRS for part in parts):
            return False
        if parts[-1] == ".gitignore":
            # Another set of files is indexed now; the rules are read again, lazily, from now on.
            self._rules = IgnoreRules(self.root)
            return True
        if os.path.splitext(parts[-1])[1].lower() in BINARY_EXTENSIONS:
            return False
        if self._rules.ignored(relative, is_dir=os.path.isdir(path)):
            return False
        # Inside another repository (a clone or submodule in this one): the scanner skips it too.
        return not any(os.path.lexists(self.root.joinpath(*parts[:depth], ".git")) for depth in range(1, len(parts)))


class RootGoneError(Exception):
    """The watched directory is not there (moved, deleted, replaced by a file); the watch retries."""


def _reason(error: BaseException) -> str:
    """What ``watch_error`` says about a failure: the caller-facing text, a dependency named, or the type."""
    if isinstance(error, CallerError | RootGoneError):
        return redact(str(error))
    return outage_message(error) or redact(f"{type(error).__name__}: {error}")


def _backoff(failures: int) -> float:
    first, cap = RETRY_SECONDS
    return float(min(cap, first * 2 ** max(failures - 1, 0)))


class RepositoryWatch:
    """Keeps one repository fresh: file-system events in, at most one job running plus one follow-up."""

    def __init__(
        self,
        service: IndexingService,
        repository: repositories.WatchedRepository,
        *,
        on_job: Callable[[JobStatus], None] | None = None,
    ) -> None:
        self.service = service
        self.repository = repository
        self.debounce = service.settings.watch_debounce_ms / 1000
        self.on_job = on_job
        #: Set by a relevant change (and at start, to catch up); cleared when a job is started for it.
        self._dirty = asyncio.Event()
        self._first_change = 0.0
        self._last_change = 0.0
        #: Jobs this watch started (for logs and tests).
        self.jobs_started = 0

    def changed(self) -> None:
        now = time.monotonic()
        if not self._dirty.is_set():
            self._first_change = now
            self._dirty.set()
        self._last_change = now

    async def run(self) -> None:
        """Watch until cancelled; never raises otherwise (failures are stored in ``watch_error`` and retried)."""
        logger.info("watching %s (%s)", self.repository.name, self.repository.path)
        self.changed()  # catch up with what changed while nobody watched
        async with asyncio.TaskGroup() as group:
            group.create_task(self._events(), name=f"watch-events {self.repository.path}")
            group.create_task(self._jobs(), name=f"watch-jobs {self.repository.path}")

    # --- file-system events ------------------------------------------------------------------

    async def _events(self) -> None:
        root = Path(self.repository.path)
        failures = 0
        while True:
            try:
                if not root.is_dir():
                    raise RootGoneError(f"repository path {root} is no longer a directory; watching again once it is")
                async for changes in awatch(
                    root,
                    watch_filter=ChangeFilter(root),
                    step=50,
                    # An empty set every ROOT_CHECK_SECONDS: a root moved away raises no event of its own.
                    rust_timeout=int(ROOT_CHECK_SECONDS * 1000),
                    yield_on_timeout=True,
                    ignore_permission_denied=True,
                ):
                    if changes:
                        self.changed()
                        failures = 0
                    if not root.is_dir():
                        break  # deleted, moved or replaced: inotify no longer sees it; watch it anew
            except asyncio.CancelledError:
                raise
            except Exception as error:  # gone directory, inotify limits: stored, retried
                failures += 1
                logger.warning("cannot watch %s: %s", root, error)
                await self._store(error=f"cannot watch the directory: {_reason(error)}")
                await asyncio.sleep(_backoff(failures))
            # Whatever changed while not watching is picked up by one more job.
            self.changed()

    # --- jobs -------------------------------------------------------------------------------

    async def _jobs(self) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            await self._settle()
            self._dirty.clear()
            try:
                await self._index_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # broker or database down, directory gone: stored, retried
                failures += 1
                self.changed()
                logger.warning("watch of %s could not re-index: %s", self.repository.path, _reason(error))
                with contextlib.suppress(Exception):
                    await self._store(error=_reason(error))
                await asyncio.sleep(_backoff(failures))

    async def _settle(self) -> None:
        """Wait until nothing changed for the debounce time (at most ``MAX_DELAY_SECONDS`` in all)."""
        while True:
            now = time.monotonic()
            quiet_at = self._last_change + self.debounce
            if now >= quiet_at or now - self._first_change >= MAX_DELAY_SECONDS:
                return
            await asyncio.sleep(min(quiet_at - now, 0.05 + self.debounce / 4))

    async def _index_once(self) -> None:
        while True:
            async with self.service.engine.connect() as conn:
                name = await repositories.watched_name(conn, self.repository.id)
                active = await repositories.active_job(conn, self.repository.path)
            if name is None:
                return  # unwatched or deleted meanwhile: the owner stops this watch
            if active is not None:
                # Someone else's job may have scanned before the change: ours follows it.
                await self._wait(active)
                continue
            started = await self.service.start_indexing(self.repository.path, name)
            if not started.existing:
                break
        self.jobs_started += 1
        job_id = uuid.UUID(started.job_id)
        logger.info("watch of %s: changes seen, started job %s", self.repository.path, job_id)
        final = await self._wait(job_id)
        if final is None:
            return
        if self.on_job is not None:
            self.on_job(final)
        if final.status == "completed":
            completed = datetime.fromisoformat(final.completed_at) if final.completed_at else None
            await self._store(caught_up_at=completed, error=None)
        elif final.status == "failed":
            await self._store(error=f"job {job_id} failed: {final.error_message}")

    async def _wait(self, job_id: uuid.UUID) -> JobStatus | None:
        """The job's final status; None when it is gone (purged, or the repository deleted)."""
        while True:
            try:
                status = await self.service.status(str(job_id))
            except NotFoundError:
                return None
            if status.status in TERMINAL:
                return status
            await asyncio.sleep(JOB_POLL_SECONDS)

    async def _store(self, *, caught_up_at: datetime | None = None, error: str | None) -> None:
        async with self.service.engine.begin() as conn:
            await repositories.record_watch_outcome(conn, self.repository.id, caught_up_at=caught_up_at, error=error)


class Watcher:
    """Runs the watches whose leases this process holds; tries the others every ``WATCH_POLL_SECONDS``.

    ``only``: watch this one repository path and no other (``codebase-mcp index --watch``).
    """

    def __init__(
        self,
        service: IndexingService,
        *,
        only: str | None = None,
        on_job: Callable[[JobStatus], None] | None = None,
    ) -> None:
        self.service = service
        self.only = only
        self.on_job = on_job
        self._running: dict[uuid.UUID, tuple[RepositoryWatch, asyncio.Task[None], Lease]] = {}
        self._waiting: dict[uuid.UUID, Lease] = {}

    @property
    def watches(self) -> dict[str, RepositoryWatch]:
        """The watches this process runs now, by repository path."""
        return {watch.repository.path: watch for watch, _task, _lease in self._running.values()}

    async def run(self) -> None:
        """Until cancelled; a failed round (database down) is logged and retried."""
        wake = self.service.watches_changed
        try:
            while True:
                try:
                    await self._round()
                except Exception:
                    logger.exception("watch round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=WATCH_POLL_SECONDS)
                wake.clear()
        finally:
            await self.stop()

    async def _round(self) -> None:
        async with self.service.engine.connect() as conn:
            wanted = {row.id: row for row in await repositories.watched_repositories(conn)}
        if self.only is not None:
            wanted = {key: row for key, row in wanted.items() if row.path == self.only}
        for key in [key for key in self._running if key not in wanted]:
            await self._stop_one(key)
        for key in [key for key in self._waiting if key not in wanted]:
            self._waiting.pop(key).release()
        for key, row in wanted.items():
            current = self._running.get(key)
            if current is not None and not current[1].done():
                continue
            if current is not None:  # ended by a bug: logged by _run, started again below
                self._running.pop(key)
            lease: Lease | None = current[2] if current is not None else self._waiting.pop(key, None)
            if lease is None:
                lease = watch_lease(self.service.settings, row.path)
            if not lease.try_acquire():
                self._waiting[key] = lease
                continue
            watch = RepositoryWatch(self.service, row, on_job=self.on_job)
            self._running[key] = (watch, asyncio.create_task(self._run(watch), name=f"watch {row.path}"), lease)

    @staticmethod
    async def _run(watch: RepositoryWatch) -> None:
        try:
            await watch.run()
        except Exception:
            logger.exception("watch of %s ended", watch.repository.path)

    async def _stop_one(self, key: uuid.UUID) -> None:
        watch, task, lease = self._running.pop(key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        lease.release()
        logger.info("stopped watching %s", watch.repository.path)

    async def stop(self) -> None:
        for key in list(self._running):
            await self._stop_one(key)
        for lease in self._waiting.values():
            lease.release()
        self._waiting.clear()


@asynccontextmanager
async def watching(service: IndexingService) -> AsyncIterator[Watcher | None]:
    """Run a :class:`Watcher` for as long as the block lasts (none with ``WATCH_ENABLED=false``)."""
    if not service.settings.watch_enabled:
        yield None
        return
    watcher = Watcher(service)
    async with background(watcher.run(), "watcher"):
        yield watcher


# --- stale search hits ------------------------------------------------------------------------


def changed_on_disk(root: Path, relative: str, indexed: repositories.IndexedFile, max_bytes: int) -> bool | None:
    """Whether the file differs from what the index stored; None when the server cannot tell.

    Cheap first: a missing file or another size is stale; a file last modified before the job that
    indexed it began was read as it is. Only a file modified since is read and hashed (sha256, as
    ``files.content_hash``), with the chunk stage's guarded reader (no FIFO, no symlink out of the root).
    """
    path = root / relative
    try:
        info = path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size != indexed.size_bytes:
        return True
    if repositories.read_as_it_is(indexed, size=info.st_size, mtime=info.st_mtime):
        return False
    # On use: the pipeline module brings the chunkers and tree-sitter, which a server needs only here.
    from actors.pipeline import NotIndexableError, read_inside

    try:
        raw = read_inside(root.resolve(), path, max_bytes)
    except (NotIndexableError, OSError):
        return None
    return hashlib.sha256(raw).hexdigest() != indexed.content_hash


def stale_marks(
    hits: list[tuple[str, str]], indexed: dict[tuple[str, str], repositories.IndexedFile], max_bytes: int
) -> dict[tuple[str, str], bool | None]:
    """:func:`changed_on_disk` for each distinct ``(repository path, file path)`` (run in a thread)."""
    marks: dict[tuple[str, str], bool | None] = {}
    for key in hits:
        if key in marks:
            continue
        known = indexed.get(key)
        marks[key] = None if known is None else changed_on_disk(Path(key[0]), key[1], known, max_bytes)
    return marks
