"""The embedded PostgreSQL while servers and workers run: bring it back, and say when its disk is full.

``ensure_embedded_postgres`` runs when a process opens its resources; a cluster that stops later
(``pg_ctl stop``, ``kill -9`` of the postmaster, a PANIC on a full disk) stayed down until some
*new* process started. Now a running server (its upkeep, every 30 s) and a worker (after a message
failed on a refused connection) start it again. An external ``DATABASE_URL`` is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from models.embedded_postgres import ensure_embedded_postgres
from models.settings import Settings

logger = logging.getLogger(__name__)

#: Modules whose failures mean "the database is unavailable", not "the request was wrong".
_DATABASE_MODULES = ("sqlalchemy", "asyncpg")
#: What PostgreSQL logs when its disk is full (WAL, relation files, temporary files).
DISK_FULL_MARKERS = ("No space left on device", "could not extend file")
#: Log lines older than this are not taken as the reason of a failure now.
DISK_FULL_RECENT = timedelta(hours=1)
_LOG_TAIL_BYTES = 65536


def _raised_in(error: BaseException, packages: tuple[str, ...]) -> bool:
    traceback = error.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in packages:
            return True
        traceback = traceback.tb_next
    return False


def is_database_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached (refused, dropped, shutting down)."""
    if isinstance(error, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OSError | TimeoutError) and _raised_in(error, _DATABASE_MODULES):
        return True  # asyncpg's connect raises ConnectionRefusedError & co. unwrapped
    kind = type(error).__name__
    if type(error).__module__.split(".", 1)[0] == "asyncpg":
        return "Connection" in kind or "CannotConnect" in kind or "Shutdown" in kind
    return False


def disk_full_note(settings: Settings, *, now: datetime | None = None) -> str | None:
    """A sentence naming the full disk when the embedded PostgreSQL's log said so within the last hour."""
    if settings.database_url:
        return None
    log_file = settings.data_dir / "postgres.log"
    try:
        with open(log_file, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - _LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    since = (now or datetime.now(UTC)) - DISK_FULL_RECENT
    for line in reversed(tail.splitlines()):
        if not any(marker in line for marker in DISK_FULL_MARKERS):
            continue
        try:  # PostgreSQL's default log_line_prefix starts with '%m': "2026-12-01 08:19:41.123 UTC"
            logged = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        except ValueError:
            logged = None
        if logged is None or logged >= since:
            return (
                f"the disk of the embedded PostgreSQL is full (its log {log_file} says 'No space left on "
                "device'): free space there; the database is started again by the next server upkeep"
            )
    return None


def _port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def revive_embedded_postgres_sync(settings: Settings) -> bool:
    """Start the embedded PostgreSQL again if it is down; True when it was down and has been started."""
    if settings.database_url or _port_answers(settings.embedded_pg_port):
        return False
    try:
        ensure_embedded_postgres(settings.data_dir, settings.embedded_pg_port, settings.embedded_pg_host)
    except (RuntimeError, OSError) as error:
        note = disk_full_note(settings)
        logger.error("embedded PostgreSQL is down and did not start: %s", note or str(error).splitlines()[0])
        return False
    logger.warning("embedded PostgreSQL was down: started it again")
    return True


async def revive_embedded_postgres(settings: Settings) -> bool:
    """:func:`revive_embedded_postgres_sync` off the event loop."""
    return await asyncio.to_thread(revive_embedded_postgres_sync, settings)
