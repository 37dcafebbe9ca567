"""What the start paths import (issue 16, resume after SIGKILL): the server answers without the
heavy modules it does not need yet, and the workers' pre-fork import sets nothing up.

Checked in fresh interpreters, because this test process has imported everything already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.fresh_interpreter import run_fresh

#: Imported by nothing the server does before it answers: the Ollama client (aiohttp, on a query's
#: first embedding), the local models (torch, transformers, ONNX Runtime and the modules that run
#: them, on a query's first embedding), numpy (vectors are made or decoded only by then), the
#: migrations (alembic, only when the schema is behind), the CLI's rendering (rich).
NOT_AT_START = (
    "aiohttp",
    "torch",
    "transformers",
    "onnxruntime",
    "alembic",
    "rich",
    "tokenizers",
    "numpy",
    "actors.embedders.local_model",
    "actors.embedders.onnx_int8",
)

PROBE = """
import importlib, json, sys, threading
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"modules": sorted(sys.modules)}))
"""


def imported(modules: list[str], code: str = PROBE) -> set[str]:
    return set(run_fresh(code, *modules)["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in NOT_AT_START if name in modules)


def test_the_server_start_path_leaves_the_heavy_modules_out() -> None:
    # What `codebase-mcp serve` imports before its first log line: the CLI, then the app.
    seen = imported(["server.cli", "server.app"])
    assert "mcp.server.mcpserver" in seen and "sqlalchemy.ext.asyncio" in seen  # it did import the server
    assert heavy(seen) == []


def test_the_bundled_model_s_name_and_dimension_load_no_numpy() -> None:
    # With the default embedder the server's start reads them (its vector size, the embedder name
    # of a search): the module that holds them is imported then, but nothing it computes with.
    code = PROBE.replace(
        "print(",
        "from actors.embedders import configured_dimension, configured_name\n"
        "from models.settings import Settings\n"
        "settings = Settings(embedder='local')\n"
        "assert configured_dimension(settings) > 0 and configured_name(settings).startswith('local:')\n"
        "print(",
    )
    seen = imported(["server.cli", "server.app"], code)
    assert "actors.embedders.local_model" in seen
    assert [name for name in ("numpy", "torch", "transformers", "tokenizers", "onnxruntime") if name in seen] == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The same probe must notice the Ollama client once it is used: the guard above can fail.
    code = PROBE.replace(
        "print(",
        "import asyncio\nfrom actors.embedders.ollama import OllamaEmbedder\n"
        "async def use():\n"
        "    embedder = OllamaEmbedder(url='http://127.0.0.1:9', model='m', dimension=3)\n"
        "    embedder._client()\n"
        "    await embedder.aclose()\n"
        "asyncio.run(use())\nprint(",
    )
    assert heavy(imported(["server.cli"], code)) == ["aiohttp"]


PRELOAD = """
import json, os, sys, threading
from actors.prefork import preload
preload()
import dramatiq.broker, models.settings
print(json.dumps({
    "modules": sorted(sys.modules),
    "threads": threading.active_count(),
    "broker": dramatiq.broker.global_broker is not None,
    "settings_reads": models.settings.get_settings.cache_info().misses,
    "multiproc_env": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
}))
"""


def preloaded(tmp_path: Path, embedder: str) -> dict[str, Any]:
    return run_fresh(
        PRELOAD,
        drop=("CODEBASE_MCP_",),
        extra_env={"dramatiq_prom_db": str(tmp_path), "CODEBASE_MCP_EMBEDDER": embedder},
    )


def test_the_pre_fork_import_loads_the_workers_modules_and_sets_nothing_up(tmp_path: Path) -> None:
    seen = preloaded(tmp_path, "ollama")
    modules = set(seen["modules"])
    # What each worker process would otherwise import itself: the actors, the asyncpg dialect, and
    # with the Ollama embedder its client's aiohttp.
    for name in ("actors.pipeline", "actors.coordinator", "actors.planning", "sqlalchemy.ext.asyncio", "aiohttp"):
        assert name in modules, name
    assert "actors.worker" not in modules  # its import sets the process up: the worker processes do it
    # Nothing that must not cross a fork: no thread, no broker, no settings read (each worker reads its own).
    assert seen["threads"] == 1
    assert seen["broker"] is False
    assert seen["settings_reads"] == 0
    # Set before prometheus_client's import, as setup_worker does: the value class is picked then.
    assert seen["multiproc_env"] == str(tmp_path)


def test_the_pre_fork_import_leaves_out_what_the_local_model_does_not_use(tmp_path: Path) -> None:
    modules = set(preloaded(tmp_path, "local")["modules"])
    assert "actors.pipeline" in modules
    # aiohttp is the Ollama client's; torch is loaded by the worker processes themselves (not fork-safe).
    assert "aiohttp" not in modules and "torch" not in modules
