"""Alembic environment, async (after Alembic's ``async`` template).

Two ways in:
- ``alembic -c migrations/alembic.ini upgrade head``: the URL comes from the settings (or
  ``-x url=...``) and the embedding dimension from ``-x dimension=N`` or the configured embedder.
- :func:`models.migrate.upgrade_to_head` from running code: it passes an open connection in
  ``config.attributes["connection"]`` (Alembic cookbook, "connection sharing"), because
  ``asyncio.run`` cannot be called inside a running event loop.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from models.tables import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from models.database import resolve_database_url

    url = context.get_x_argument(as_dictionary=True).get("url") or resolve_database_url()
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations_online()
