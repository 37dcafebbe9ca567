"""The embedded PostgreSQL refuses a port that serves another data directory; the CLI stays quiet.

Real clusters (initdb + pg_ctl of the bundled PostgreSQL 18) and the real ``codebase-mcp`` CLI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from models.embedded_postgres import DataDirectoryConflictError, ensure_embedded_postgres, stop_embedded_postgres
from tests.integration.stack import BIN, REPO_ROOT, free_port


@pytest.fixture
def two_data_dirs() -> Iterator[tuple[Path, Path]]:
    first, second = (Path(tempfile.mkdtemp(prefix=f"cbm-test-pgdir{n}-")) for n in (1, 2))
    yield first, second
    for data_dir in (first, second):
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_second_data_dir_on_a_taken_port_is_refused_naming_the_first(two_data_dirs: tuple[Path, Path]) -> None:
    first, second = two_data_dirs
    port = free_port()
    url = ensure_embedded_postgres(first, port)
    assert url.endswith(f":{port}/codebase_mcp")
    assert ensure_embedded_postgres(first, port) == url  # its own server: found running, accepted

    with pytest.raises(DataDirectoryConflictError) as refused:
        ensure_embedded_postgres(second, port)
    message = str(refused.value)
    assert str((first / "postgres").resolve()) in message, message
    assert str(second / "postgres") in message, message
    assert "CODEBASE_MCP_EMBEDDED_PG_PORT" in message and f"CODEBASE_MCP_DATA_DIR={first.resolve()}" in message
    # Nothing was created for the refused data directory.
    assert not (second / "postgres" / "PG_VERSION").exists()

    # On a port of its own the second data directory gets its own cluster.
    other_port = free_port()
    assert ensure_embedded_postgres(second, other_port).endswith(f":{other_port}/codebase_mcp")


def test_a_port_held_by_another_program_is_named(two_data_dirs: tuple[Path, Path]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(DataDirectoryConflictError, match=f"port 127.0.0.1:{port} is in use by a program"):
            ensure_embedded_postgres(two_data_dirs[0], port)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "codebase-mcp"), *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


async def test_cli_prints_no_alembic_lines_unless_verbose(make_database: Callable[[str], Awaitable[str]]) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
    env.update({"CODEBASE_MCP_EMBEDDER": "ollama", "CODEBASE_MCP_OLLAMA_DIMENSION": "384"})
    # A new database each time: on a database already at the head, alembic does not run at all
    # (models.migrate.script_heads), so there would be nothing for --verbose to show.
    quiet = _cli({**env, "CODEBASE_MCP_DATABASE_URL": await make_database("quiet")}, "repos")
    assert quiet.returncode == 0, quiet.stderr
    assert "alembic" not in quiet.stderr, quiet.stderr

    verbose = _cli({**env, "CODEBASE_MCP_DATABASE_URL": await make_database("verbose")}, "--verbose", "repos")
    assert verbose.returncode == 0, verbose.stderr
    assert "alembic.runtime.migration" in verbose.stderr, verbose.stderr

    debug_env = {**env, "CODEBASE_MCP_LOG_LEVEL": "DEBUG", "CODEBASE_MCP_DATABASE_URL": await make_database("debug")}
    debug = _cli(debug_env, "repos")
    assert debug.returncode == 0, debug.stderr
    assert "alembic.runtime.migration" in debug.stderr, debug.stderr
    assert quiet.stdout == verbose.stdout == debug.stdout
