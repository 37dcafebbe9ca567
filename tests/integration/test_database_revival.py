"""The embedded PostgreSQL comes back while the server runs, and a full disk is named (issue 16, defects 12/13).

Before, a cluster stopped after start (``pg_ctl stop``, ``kill -9``, a PANIC on a full disk) stayed
down until some new process started, and jobs failed with a bare ``ConnectionRefusedError``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models.database_watch import disk_full_note
from models.embedded_postgres import stop_embedded_postgres
from models.settings import Settings
from tests.integration.stack import Stack, ToolCallError, free_port


@pytest.fixture(scope="module")
def own_database_stack(base_env: dict[str, str], make_vhost: Callable[[], str]) -> Iterator[tuple[Stack, Path]]:
    """A server on an embedded PostgreSQL of its own (no DATABASE_URL), which the test may stop."""
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-test-revive-"))
    env = {key: value for key, value in base_env.items() if key != "CODEBASE_MCP_DATABASE_URL"}
    env |= {
        "CODEBASE_MCP_BROKER_URL": make_vhost(),
        "CODEBASE_MCP_DATA_DIR": str(data_dir),
        "CODEBASE_MCP_EMBEDDED_PG_PORT": str(free_port()),
    }
    stack = Stack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-revive-logs-")))
    stack.start_server()
    yield stack, data_dir
    stack.stop()
    stop_embedded_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_stopped_embedded_database_is_started_again_by_the_running_server(
    own_database_stack: tuple[Stack, Path],
) -> None:
    stack, data_dir = own_database_stack
    async with stack.client() as client:
        assert "repositories" in await client.call("list_repositories")
        stop_embedded_postgres(data_dir)
        with pytest.raises(ToolCallError, match="the database is unavailable"):
            await client.call("list_repositories")
        deadline = time.monotonic() + 120  # the upkeep runs every 30 s
        while True:
            try:
                await client.call("list_repositories")
                break
            except ToolCallError as error:
                assert "the database is unavailable" in str(error)
                assert time.monotonic() < deadline, "the embedded PostgreSQL stayed down"  # before: for ever
                await asyncio.sleep(1)


_PANIC = (
    '{at} UTC [4242] PANIC:  could not write to file "pg_wal/xlogtemp.4242": No space left on device\n'
    "{at} UTC [4200] LOG:  database system is shut down\n"
)


def _settings_with_log(tmp_path: Path, at: datetime) -> Settings:
    (tmp_path / "postgres.log").write_text(
        "2026-12-01 08:00:00.000 UTC [4200] LOG:  database system is ready to accept connections\n"
        + _PANIC.format(at=at.strftime("%Y-%m-%d %H:%M:%S.%f")[:23]),
        encoding="utf-8",
    )
    return Settings(data_dir=tmp_path)


def test_a_recent_disk_full_panic_is_named(tmp_path: Path) -> None:
    note = disk_full_note(_settings_with_log(tmp_path, datetime.now(UTC) - timedelta(minutes=5)))
    assert note is not None and "disk of the embedded PostgreSQL is full" in note


def test_an_old_disk_full_panic_or_an_external_database_is_not_blamed(tmp_path: Path) -> None:
    assert disk_full_note(_settings_with_log(tmp_path, datetime.now(UTC) - timedelta(hours=3))) is None
    external = Settings(data_dir=tmp_path, database_url="postgresql://db.example/x")
    assert disk_full_note(external) is None
