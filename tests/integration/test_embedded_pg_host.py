"""``CODEBASE_MCP_EMBEDDED_PG_HOST``: the embedded PostgreSQL on an address other than 127.0.0.1.

The multi-host stack (``-m hosts``) runs it on the data host's address for the other hosts; this
checks the same on a second loopback address, in the default suite.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import asyncpg

from models.database import resolve_database_url
from models.embedded_postgres import stop_embedded_postgres
from models.settings import Settings
from tests.integration.stack import free_port


async def test_embedded_postgres_listens_on_the_configured_address() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-pghost-"))
    settings = Settings(
        database_url=None, data_dir=data_dir, embedded_pg_port=free_port(), embedded_pg_host="127.0.0.2"
    )
    try:
        url = resolve_database_url(settings)
        assert url == f"postgresql+asyncpg://postgres@127.0.0.2:{settings.embedded_pg_port}/codebase_mcp"
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            assert await conn.fetchval("SELECT inet_server_addr()::text") == "127.0.0.2/32"
        finally:
            await conn.close()
        # Hosts of the address's own subnets are let in; a second start adds the rule no second time.
        resolve_database_url(settings)
        rules = (data_dir / "postgres" / "pg_hba.conf").read_text(encoding="utf-8")
        assert rules.count("host all all samenet trust") == 1, rules
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
