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


def create_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> AsyncEngine:
    """An asyncpg engine whose connections speak pgvector's binary format.

    Call only after migrations ran: ``register_vector`` needs the extension to exist.
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "codebase-mcp"}},
        **kwargs,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _register_vector(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(register_vector)

    return engine
