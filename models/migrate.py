"""Bring a database to the newest schema from running code (server, workers, CLI)."""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from models.vector_index import ensure_vector_index

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 0x0C0DEBA5E


#: ``revision = "0005"`` / ``down_revision: str | None = "0004"`` lines of the migration scripts.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


def script_heads(versions_dir: Path = MIGRATIONS_DIR / "versions") -> frozenset[str] | None:
    """The head revisions of the migration scripts, read from their revision lines without alembic.

    Importing alembic costs about 0.4 CPU-seconds, in the server and in every worker process at
    each start, which is on the path of a resume after a restart (bench/resume.py); a database
    already at these heads needs none of it. None when a script does not say its revisions in
    plain literals (then alembic decides).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions_dir.glob("*.py"):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str):
            return None
        revisions.add(revision)
        parents.update([down] if isinstance(down, str) else (down or ()))
    heads = frozenset(revisions - parents)
    return heads or None


async def _at_head(connection: AsyncConnection) -> bool:
    """True when the database records exactly the scripts' heads (see :func:`script_heads`)."""
    heads = script_heads()
    if heads is None or not await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
        return False
    recorded = {row[0] for row in await connection.execute(text("SELECT version_num FROM alembic_version"))}
    return recorded == heads


def alembic_config() -> Config:
    from alembic.config import Config  # imported on use: see script_heads

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
    from alembic import command  # imported on use: see script_heads

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
            if not await _at_head(connection):
                await connection.run_sync(_upgrade, dimension)
            await ensure_vector_index(connection, dimension)
    finally:
        await engine.dispose()
