"""Bring a database to the newest schema from running code (server, workers, CLI)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from models.vector_index import ensure_vector_index

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 0x0C0DEBA5E


def alembic_config() -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines ("Context impl", "Will assume transactional DDL") on every start are
    noise in front of a command's output; they stay when asked for (DEBUG, or a level set on the
    ``alembic`` logger, which is what ``codebase-mcp --verbose`` does)."""
    alembic_logger = logging.getLogger("alembic")
    if alembic_logger.level != logging.NOTSET or logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    alembic_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_logger.setLevel(logging.NOTSET)


def _upgrade(connection: Connection, dimension: int) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["embedding_dimension"] = dimension
    with _quiet_alembic():
        command.upgrade(config, "head")


async def upgrade_to_head(url: str, dimension: int) -> None:
    """Run ``alembic upgrade head`` under an advisory lock, so concurrent starters take turns, and
    make sure the HNSW index for ``dimension`` (the configured embedder's) exists.

    Any dimension is accepted: each repository's vectors keep their own size (migration 0004).
    """
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await connection.run_sync(_upgrade, dimension)
            await ensure_vector_index(connection, dimension)
    finally:
        await engine.dispose()
