"""Engine and session factory; one per process, created on the event loop that uses it."""

from __future__ import annotations

from typing import Any

from pgvector.asyncpg import register_vector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from models.embedded_postgres import ensure_embedded_postgres
from models.settings import Settings, get_settings


def resolve_database_url(settings: Settings | None = None) -> str:
    """The configured URL, or the embedded database's (started on demand).

    A plain ``postgresql://`` URL is accepted and given the asyncpg driver.
    """
    settings = settings or get_settings()
    if settings.database_url:
        url = settings.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url
    return ensure_embedded_postgres(settings.data_dir, settings.embedded_pg_port, settings.embedded_pg_host)


def create_engine(
    url: str, *, pool_size: int = 10, idle_in_transaction_seconds: float | None = None, **kwargs: Any
) -> AsyncEngine:
    """An asyncpg engine whose connections speak pgvector's binary format.

    ``idle_in_transaction_seconds``: PostgreSQL ends a session of this engine that sits that long
    inside a transaction without running a statement, releasing its locks. A process stopped
    mid-transaction (SIGSTOP, a frozen VM) otherwise holds its batch and job row locks for as
    long as it is stopped, and every other worker waits on them (DB_IDLE_IN_TRANSACTION_SECONDS).

    Call only after migrations ran: ``register_vector`` needs the extension to exist.
    """
    server_settings = {"application_name": "codebase-mcp"}
    if idle_in_transaction_seconds is not None:
        server_settings["idle_in_transaction_session_timeout"] = str(int(idle_in_transaction_seconds * 1000))
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": server_settings},
        **kwargs,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _register_vector(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(register_vector)

    return engine
