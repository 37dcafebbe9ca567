"""The RabbitMQ broker every process shares, configured from the settings.

Imported for its side effect by ``actors`` (so ``dramatiq actors`` finds it) and by the server
and CLI (so they publish to the same broker).
"""

from __future__ import annotations

# First: in worker processes it switches prometheus_client to multiprocess mode before anything imports it.
from actors.metrics import in_worker_process  # isort: skip

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AsyncIO

from actors.resources import WorkerResources
from models.exporter import LoopbackPrometheus
from models.logs import configure_logging
from models.settings import Settings, get_settings


def build_broker(settings: Settings) -> tuple[RabbitmqBroker, WorkerResources]:
    # confirm_delivery: a publish returns only once RabbitMQ holds the message, which is what lets
    # a ledger transaction commit right after publishing without ever losing a batch.
    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    broker.add_middleware(AsyncIO())
    if in_worker_process():
        # Dramatiq's metrics plus ours (actors/metrics.py), summed over the worker processes and
        # served by its exposition process on dramatiq_prom_port (9191).
        # Its exporter binds WORKER_METRICS_HOST (loopback), not Dramatiq's 0.0.0.0.
        broker.add_middleware(LoopbackPrometheus())
    resources = WorkerResources(settings)
    broker.add_middleware(resources)
    return broker, resources


settings = get_settings()
configure_logging(settings.log_level, json_lines=settings.log_json)
broker, resources = build_broker(settings)
dramatiq.set_broker(broker)
