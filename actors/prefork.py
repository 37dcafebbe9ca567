"""``python -m actors.worker [dramatiq options]``: Dramatiq's CLI with the workers' modules imported before it forks.

It is the same command as ``dramatiq actors.worker [options]`` (Dramatiq's own parser, process
management, signals and exit codes, with ``actors.worker`` as the broker argument), except that
its main process imports the modules every worker process needs once, before it forks: each
worker process then starts with them in its copy-on-write memory instead of importing them
itself (about 1.1 CPU-s per process, docs/reliability.md). Dramatiq's own main process imports
none of them. The local pools (``serve``'s and ``codebase-mcp index``'s,
:func:`server.supervisor.spawn_workers`) start workers so; ``dramatiq actors.worker`` stays the
operator's command and works as before. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

#: The broker argument Dramatiq's CLI gets: imported in every worker process, where it sets it up.
WORKER_MODULE = "actors.worker"

#: Imported in the main process besides the actor modules: the metrics and SQLAlchemy's asyncpg
#: dialect (loaded on the first engine).
EXTRA_MODULES = ("actors.metrics", "sqlalchemy.dialects.postgresql.asyncpg")
#: Imported too with the Ollama embedder, whose client loads it on its first call (the settings
#: come from the environment only, so the variable tells without reading them).
OLLAMA_MODULES = ("aiohttp",)


def preload() -> float:
    """Import what every worker process imports, without setting anything up; the seconds it took.

    Only imports: no settings read, no broker, no connection, no thread (none would survive the
    fork). ``PROMETHEUS_MULTIPROC_DIR`` is set first, as :func:`actors.broker.setup_worker` does,
    because prometheus_client picks its value class when it is first imported. torch is left to
    the worker processes: the local model loads it when its resources open, and a fork after
    torch has started its thread pools is not safe.
    """
    began = time.perf_counter()
    from dramatiq.middleware.prometheus import DB_PATH

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = DB_PATH
    from actors.broker import ACTOR_MODULES

    ollama = os.environ.get("CODEBASE_MCP_EMBEDDER") == "ollama"
    for name in (*ACTOR_MODULES, *EXTRA_MODULES, *(OLLAMA_MODULES if ollama else ())):
        importlib.import_module(name)
    return time.perf_counter() - began


def main(argv: list[str]) -> int:
    """``dramatiq actors.worker ARGV...`` with the workers' modules imported before the fork."""
    from dramatiq import cli

    args = cli.make_argument_parser().parse_args([WORKER_MODULE, *argv])  # --help and bad options exit here
    seconds = preload()
    print(f"imported the worker modules in {seconds:.2f} s before forking", file=sys.stderr, flush=True)
    return int(cli.main(args))
