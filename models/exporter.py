"""The workers' Prometheus exporter, bound to ``WORKER_METRICS_HOST`` instead of Dramatiq's 0.0.0.0.

Dramatiq's ``Prometheus`` middleware declares its exposition server as a *fork*: the ``dramatiq``
CLI starts it in a process of its own that imports only the fork function's module and reads
``dramatiq_prom_host`` (default ``0.0.0.0``) when it imports Dramatiq's module. Our code never runs
in that process unless the fork function is ours, so this module is what it imports. It lives
outside the ``actors`` package, whose import would load the whole pipeline into the exporter.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dramatiq.middleware import prometheus

from models.settings import get_settings


def run_exposition_server() -> int:
    """Dramatiq's exposition server, on ``CODEBASE_MCP_WORKER_METRICS_HOST`` unless ``dramatiq_prom_host`` is set."""
    if "dramatiq_prom_host" not in os.environ:
        prometheus.HTTP_HOST = get_settings().worker_metrics_host
    return int(prometheus._run_exposition_server())


class LoopbackPrometheus(prometheus.Prometheus):
    """Dramatiq's ``Prometheus`` middleware whose exporter process binds the configured host."""

    @property
    def forks(self) -> list[Callable[[], int]]:
        return [run_exposition_server]
