"""Migration 0005 classifies the files an existing index already holds (no re-index needed)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from models.migrate import alembic_config
from tests.integration.stack import free_port


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["embedding_dimension"] = 8
    command.upgrade(config, revision)


async def test_0005_backfills_roles_of_indexed_files() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-roles-pg-"))
    url = ensure_embedded_postgres(data_dir, free_port())
    engine = create_async_engine(url)
    paths = {"src/app.py": "code", "tests/test_app.py": "test", "README.md": "docs", "examples/demo.go": "example"}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0003")
            repository = uuid.uuid4()
            await conn.execute(
                text("INSERT INTO repositories (id, path, name) VALUES (:id, '/repo', 'repo')"), {"id": repository}
            )
            for path in paths:
                await conn.execute(
                    text(
                        "INSERT INTO files (repository_id, path, content_hash, language, size_bytes, line_count) "
                        "VALUES (:repository, :path, 'h', 'text', 1, 1)"
                    ),
                    {"repository": repository, "path": path},
                )
            await conn.run_sync(_upgrade_to, "0005")
            rows = (await conn.execute(text("SELECT path, role FROM files"))).all()
        assert {row.path: row.role for row in rows} == paths
    finally:
        await engine.dispose()
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
