"""The RabbitMQ broker every process shares, built by a function, never at import.

Two entry points call it: a worker process through :func:`setup_worker` (``dramatiq actors.worker``
names :mod:`actors.worker`, which calls it), and the server and CLI through :func:`setup_broker`
(``IndexingService.open``), so they publish to the same broker. Importing any module of ``actors``
(the chunker, the embedders, an actor module) builds nothing, reads no settings and leaves logging
alone; the actor modules only register their functions, which :func:`declare_actors` declares on a
broker, the worker's or a test's ``StubBroker``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AsyncIO
from dramatiq.middleware.prometheus import DB_PATH

from actors.messages import EMBED_QUEUE
from actors.resources import WorkerResources
from models.exporter import LoopbackPrometheus
from models.logs import configure_logging
from models.settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])

#: The modules whose functions are actors; :func:`declare_actors` imports them.
ACTOR_MODULES = ("actors.coordinator", "actors.pipeline", "actors.planning")

#: ``(function, dramatiq.actor options)`` of every actor, in import order (see :func:`stage_actor`).
_REGISTERED: list[tuple[Callable[..., Any], dict[str, Any]]] = []

#: The process's broker and its worker resources, once :func:`setup_broker` ran.
_current: tuple[dramatiq.Broker, WorkerResources] | None = None


def stage_actor(**options: Any) -> Callable[[F], F]:
    """Mark an async function as an actor with ``dramatiq.actor`` ``options``; declared later, on a broker.

    The function stays a plain function, so importing its module needs no broker.
    """

    def register(fn: F) -> F:
        _REGISTERED.append((fn, options))
        return fn

    return register


def declare_actors(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare every actor on ``broker``; returns them by name."""
    for name in ACTOR_MODULES:
        importlib.import_module(name)
    declared: dict[str, dramatiq.Actor[Any, Any]] = {}
    for fn, options in _REGISTERED:
        declare = dramatiq.actor(broker=broker, actor_name=fn.__name__, **options)
        declared[fn.__name__] = declare(fn)
    return declared


class PipelineBroker(RabbitmqBroker):
    """RabbitMQ with the embed queue's prefetch capped at ``embed_prefetch`` per worker process.

    A Dramatiq thread stays with an async actor until its coroutine ends, and an embed message
    waits for the process's embed slot (``EMBED_CONCURRENCY``) on a thread. With the usual
    prefetch (one or two messages per thread) every thread of a process ends up holding an embed
    message that waits, and chunking, writing and recording wait behind them: progress stalls
    (measured: 5 % for four minutes, then 100 %). Capped at ``EMBED_CONCURRENCY``, a process
    holds no more embed messages than it can run, and its other threads stay free for the other
    queues; the next batch's message comes within milliseconds of the previous one's ack.
    """

    def __init__(self, *, embed_prefetch: int, **options: Any) -> None:
        super().__init__(**options)
        self.embed_prefetch = embed_prefetch

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name == EMBED_QUEUE:
            prefetch = max(1, min(prefetch, self.embed_prefetch))
        return super().consume(queue_name, prefetch, timeout)


def build_broker(settings: Settings, *, worker: bool = False) -> tuple[RabbitmqBroker, WorkerResources]:
    # confirm_delivery: a publish returns only once RabbitMQ holds the message, which is what lets
    # a ledger transaction commit right after publishing without ever losing a batch.
    broker = PipelineBroker(url=settings.broker_url, confirm_delivery=True, embed_prefetch=settings.embed_concurrency)
    broker.add_middleware(AsyncIO())
    if worker:
        # Dramatiq's metrics plus ours (actors/metrics.py), summed over the worker processes and
        # served by its exposition process on dramatiq_prom_port (9191).
        # Its exporter binds WORKER_METRICS_HOST (loopback), not Dramatiq's 0.0.0.0.
        broker.add_middleware(LoopbackPrometheus())
    resources = WorkerResources(settings)
    broker.add_middleware(resources)
    return broker, resources


def use_broker(broker: dramatiq.Broker, resources: WorkerResources) -> None:
    """Make ``broker`` the process's broker (publishing uses it) and ``resources`` the actors' resources."""
    global _current
    _current = (broker, resources)
    dramatiq.set_broker(broker)


def setup_broker(settings: Settings, *, worker: bool = False) -> dramatiq.Broker:
    """Build the process's broker once (later calls return it) and make it Dramatiq's global broker."""
    if _current is None:
        use_broker(*build_broker(settings, worker=worker))
    assert _current is not None
    return _current[0]


def worker_resources() -> WorkerResources:
    """The settings, engine and embedder of this process's actors (set up by :func:`setup_broker`)."""
    if _current is None:
        raise RuntimeError("no broker set up in this process: call actors.broker.setup_worker() first")
    return _current[1]


def setup_worker(settings: Settings | None = None) -> dramatiq.Broker:
    """Everything a ``dramatiq`` worker process needs, in order: metrics mode, logging, broker, actors."""
    # Before anything imports prometheus_client (the actor modules' metrics do): it picks its
    # value class once, at import, from this variable. The directory is the one Dramatiq's
    # middleware and exposition server use; Dramatiq itself sets it only after process boot.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = DB_PATH
    settings = settings or get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    broker = setup_broker(settings, worker=True)
    declare_actors(broker)
    from actors import metrics  # after the variable above is set

    metrics.check_multiprocess_mode()
    return broker
