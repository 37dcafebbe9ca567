"""``codebase-mcp setup``: every local service up (idempotently), checked, and the client configuration to paste.

RabbitMQ comes up through ``rabbitmq/ensure-rabbitmq.sh`` with its Prometheus plugin enabled
online (the broker is not restarted for it), then the embedded PostgreSQL and the schema, then the
``doctor`` checks. Each step says what it did; a step that fails says why and what to run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from models.settings import Settings
from server.local_broker import LOCAL_HOSTS

RABBITMQ_DIR = Path(__file__).resolve().parents[1] / "rabbitmq"
SERVER_NAME = "codebase"
#: Settings a client configuration never carries: HTTP-only or secret.
_NOT_FOR_CLIENTS = ("CODEBASE_MCP_AUTH_TOKEN",)


def server_command() -> str:
    """The absolute path of this installation's ``codebase-mcp`` (clients start it without a shell PATH)."""
    beside = Path(sys.executable).parent / "codebase-mcp"
    if beside.exists():
        return str(beside)
    return shutil.which("codebase-mcp") or str(beside)


def client_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``CODEBASE_MCP_*`` settings set here, for the client to hand to the server it starts."""
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in sorted(source.items())
        if key.startswith("CODEBASE_MCP_") and key not in _NOT_FOR_CLIENTS
    }


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def client_configs(command: str, env: dict[str, str], http_url: str) -> dict[str, str]:
    """What to paste into each client, by client: stdio for all, and one HTTP-with-token form."""
    stdio: dict[str, Any] = {"command": command, "args": ["serve"]}
    if env:
        stdio["env"] = env
    env_flags = "".join(f" -e {shlex.quote(f'{key}={value}')}" for key, value in env.items())
    toml_env = ""
    if env:
        toml_env = "env = { " + ", ".join(f"{key} = {_toml_string(value)}" for key, value in env.items()) + " }\n"
    return {
        "claude": f"claude mcp add --scope user{env_flags} {SERVER_NAME} -- {shlex.quote(command)} serve",
        "cursor": json.dumps({"mcpServers": {SERVER_NAME: stdio}}, indent=2),
        "vscode": json.dumps({"servers": {SERVER_NAME: {"type": "stdio", **stdio}}}, indent=2),
        "codex": f'[mcp_servers.{SERVER_NAME}]\ncommand = {_toml_string(command)}\nargs = ["serve"]\n{toml_env}',
        "claude-http": (
            f"claude mcp add --scope user --transport http {SERVER_NAME} {http_url} "
            '--header "Authorization: Bearer $CODEBASE_MCP_AUTH_TOKEN"'
        ),
    }


def render_configs(configs: dict[str, str]) -> str:
    return "\n".join(
        [
            "Claude Code (run once):",
            f"  {configs['claude']}",
            "",
            "Cursor (~/.cursor/mcp.json, or .cursor/mcp.json in a project):",
            configs["cursor"],
            "",
            "VS Code (.vscode/mcp.json):",
            configs["vscode"],
            "",
            "Codex (~/.codex/config.toml):",
            configs["codex"].rstrip("\n"),
            "",
            "HTTP instead (codebase-mcp serve --transport http, with CODEBASE_MCP_AUTH_TOKEN set), e.g. Claude Code:",
            f"  {configs['claude-http']}",
        ]
    )


def _step(name: str, ok: bool, detail: str) -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    return ok


def ensure_rabbitmq(settings: Settings) -> bool:
    """Start the local broker (idempotent) and enable its Prometheus plugin online; a remote one is only probed."""
    host = urlsplit(settings.broker_url).hostname or "127.0.0.1"
    if host not in LOCAL_HOSTS:
        return _step("rabbitmq", True, f"{host} is not this machine: not managed here (doctor checks it)")
    script = RABBITMQ_DIR / "ensure-rabbitmq.sh"
    if not script.exists():
        return _step("rabbitmq", False, f"{script} is missing: run setup from a checkout of the project")
    started = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        return _step("rabbitmq", False, f"{script} failed:\n{started.stderr.strip()}")
    said = started.stderr.strip().splitlines()
    _step("rabbitmq", True, said[-1].removeprefix("[rabbitmq] ") if said else "running")
    # Online: the running node loads the plugin at once, nothing restarts (the broker may be shared).
    plugin = subprocess.run(
        ["rabbitmq-plugins", "-q", "enable", "--online", "rabbitmq_prometheus"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if plugin.returncode != 0:
        return _step(
            "rabbitmq prometheus plugin",
            False,
            f"rabbitmq-plugins enable failed: {(plugin.stderr or plugin.stdout).strip()}",
        )
    return _step("rabbitmq prometheus plugin", True, "enabled (metrics on :15692)")


def ensure_database(settings: Settings) -> bool:
    """Start the embedded PostgreSQL when no DATABASE_URL is set, and bring the schema to head."""
    from server.service import IndexingService

    async def open_once() -> int:
        async with IndexingService.open(settings) as service:
            return service.dimension

    where = "external PostgreSQL" if settings.database_url else f"embedded PostgreSQL in {settings.data_dir}"
    try:
        dimension = asyncio.run(open_once())
    except Exception as error:  # reported with the step; the doctor run below says more
        return _step("database", False, f"{where}: {type(error).__name__}: {error}")
    return _step("database", True, f"{where}, schema at head (embedding dimension {dimension})")


def run_doctor(settings: Settings) -> bool:
    """The doctor's checks; no worker attached yet is expected here (serve starts them) unless WORKERS=never."""
    from server import doctor

    checks = asyncio.run(doctor.run_checks(settings))
    result = doctor.report(settings, checks)
    print(doctor.render(result), flush=True)
    failing = [check for check in checks if not check.ok]
    only_no_worker = failing and all(check.name == "broker" and "no consumer" in check.detail for check in failing)
    if settings.workers != "never" and only_no_worker:
        print(
            "  (no worker attached yet is expected: `codebase-mcp serve` starts local workers itself, "
            f"CODEBASE_MCP_WORKERS={settings.workers})",
            flush=True,
        )
        return True
    return bool(result["ok"])


def run_setup(settings: Settings, *, config_only: bool = False) -> int:
    """Exit 0 when every service is up and checked (the configuration is printed either way)."""
    ok = True
    if not config_only:
        ok = ensure_rabbitmq(settings) and ok
        ok = ensure_database(settings) and ok
        ok = run_doctor(settings) and ok
        print()
    http_url = f"http://{settings.http_host}:{settings.http_port}/mcp"
    print(render_configs(client_configs(server_command(), client_env(), http_url)))
    if not ok:
        print("\nsetup is incomplete: fix the [FAIL] steps above and run `codebase-mcp setup` again", file=sys.stderr)
    return 0 if ok else 1
