"""Importing the pure libraries, the actor modules or a migration sets nothing up (issue 14).

Checked in a fresh interpreter, because this test process may already hold a broker, settings or
a configured root logger from other tests.
"""

from __future__ import annotations

from tests.fixtures.fresh_interpreter import run_fresh

MODULES = [
    "actors",
    "actors.scanning",
    "actors.chunking",
    "actors.syntax_chunking",
    "actors.embedders",
    "actors.messages",
    "actors.dispatch",
    "actors.metrics",
    "actors.broker",
    "actors.coordinator",
    "actors.pipeline",
    "actors.planning",
    "migrations.versions.0001_initial_schema",
    "migrations.versions.0002_embedding_cache",
    "migrations.versions.0003_search_and_incremental",
    "server.service",
]

PROBE = """
import importlib, json, logging, os, sys
root = logging.getLogger()
marker = logging.NullHandler()
root.addHandler(marker)
level = root.level
for name in sys.argv[1:]:
    importlib.import_module(name)
import dramatiq.broker
import models.settings
print(json.dumps({
    "broker": dramatiq.broker.global_broker is not None,
    "settings_reads": models.settings.get_settings.cache_info().misses,
    "handlers_kept": root.handlers == [marker],
    "level_kept": root.level == level,
    "multiproc_env": "PROMETHEUS_MULTIPROC_DIR" in os.environ,
}))
"""


def probe(modules: list[str]) -> dict[str, object]:
    return run_fresh(PROBE, *modules)


def test_importing_actors_and_migrations_builds_nothing() -> None:
    assert probe(MODULES) == {
        "broker": False,
        "settings_reads": 0,
        "handlers_kept": True,
        "level_kept": True,
        "multiproc_env": False,
    }


def test_the_probe_sees_a_set_up_worker() -> None:
    # The same probe, importing the worker entry point, must report every side effect: it can fail.
    seen = probe(["actors.worker"])
    assert seen["broker"] is True
    assert seen["settings_reads"] == 1
    assert seen["handlers_kept"] is False
    assert seen["multiproc_env"] is True
