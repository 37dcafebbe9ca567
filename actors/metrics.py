"""Pipeline metrics of the Dramatiq worker processes: every metric object of the workers is here.

``dramatiq actors.worker`` runs several worker processes. prometheus_client's multiprocess mode makes
each process write its values to files under ``dramatiq_prom_db``, and Dramatiq's own exposition
server (the ``Prometheus`` middleware's fork, port ``dramatiq_prom_port``, default 9191) sums them
with ``MultiProcessCollector``. prometheus_client picks its value class once, when
``prometheus_client.values`` is first imported, from ``PROMETHEUS_MULTIPROC_DIR``; Dramatiq sets
that variable only after process boot, which is too late for metrics created at import. So
:func:`actors.broker.setup_worker` sets it before it imports this module; this module itself
changes no environment.

In other processes (the MCP server, the CLI) the objects below exist but stay in a private registry
nobody exports: the server's own metrics are in ``server/metrics.py``.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.registry import Collector

from models.ledger import Recorded


def in_worker_process() -> bool:
    """True inside a process started by the ``dramatiq`` CLI (fork, spawn or forkserver alike)."""
    return "dramatiq.cli" in sys.modules


logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Exported through the multiprocess files, never through this registry (which keeps the objects
#: out of the default registry of non-worker processes).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Stage seconds: sub-second chunking up to embedding batches that take minutes on a CPU.
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_EMBED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

FILES = Counter(
    "codebase_mcp_files",
    "Files by outcome: indexed, skipped (too large, binary; by the planner or a batch) or failed (unreadable).",
    ["outcome"],
    registry=REGISTRY,
)
CHUNKS_WRITTEN = Counter("codebase_mcp_chunks_written", "Chunks stored by recorded batches.", registry=REGISTRY)
BATCHES_RECORDED = Counter(
    "codebase_mcp_batches_recorded", "Batches the coordinator recorded (each batch once).", registry=REGISTRY
)
JOBS_FINISHED = Counter(
    "codebase_mcp_jobs_finished",
    "Jobs a worker completed or failed, by final status.",
    ["status"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "codebase_mcp_batch_stage_duration_seconds",
    "Time one message of a pipeline stage took (stage: chunk, embed, write, record).",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
EMBED_DURATION = Histogram(
    "codebase_mcp_embedding_request_duration_seconds",
    "Time of one embedder call (including its own retries), successful or not.",
    buckets=_EMBED_BUCKETS,
    registry=REGISTRY,
)
EMBED_FAILURES = Counter(
    "codebase_mcp_embedding_request_failures", "Embedder calls that raised after their retries.", registry=REGISTRY
)
EMBED_BATCH_TEXTS = Histogram(
    "codebase_mcp_embedding_batch_texts",
    "Texts sent in one embedder call.",
    buckets=_BATCH_SIZE_BUCKETS,
    registry=REGISTRY,
)
EMBED_TEXTS = Counter(
    "codebase_mcp_embedding_texts",
    "Chunk texts the embed stage needed, by source: cache (stored vector reused) or embedder.",
    ["source"],
    registry=REGISTRY,
)

for _outcome in ("indexed", "skipped", "failed"):
    FILES.labels(_outcome)
for _status in ("completed", "failed"):
    JOBS_FINISHED.labels(_status)
for _source in ("cache", "embedder"):
    EMBED_TEXTS.labels(_source)
for _stage in ("chunk", "embed", "write", "record"):
    STAGE_DURATION.labels(_stage)


def check_multiprocess_mode() -> None:
    """Warn when a worker's values would stay in its own process (prometheus_client imported too early)."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        logger.warning("prometheus_client was imported before multiprocess mode was set: worker metrics will be lost")


#: Counts an actor call makes inside its transactions, applied only once the call returned normally,
#: that is after every transaction it opened committed (a failed call is retried and counts then).
_pending: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "codebase_mcp_pending_metrics", default=None
)


def _after_success(update: Callable[[], None]) -> None:
    pending = _pending.get()
    if pending is None:
        update()
    else:
        pending.append(update)


def timed_stage(stage: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async actor function: its duration goes to ``STAGE_DURATION``, and the counts it
    made are applied when it returns (discarded when it raises)."""
    histogram = STAGE_DURATION.labels(stage)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            pending: list[Callable[[], None]] = []
            token = _pending.set(pending)
            try:
                result = await fn(*args, **kwargs)
            finally:
                _pending.reset(token)
                histogram.observe(time.perf_counter() - start)
            for update in pending:
                update()
            return result

        return wrapper

    return decorate


async def timed_embed(embed: Callable[[Sequence[str]], Awaitable[R]], texts: Sequence[str]) -> R:
    """Call the embedder, observing latency, batch size and failures."""
    EMBED_BATCH_TEXTS.observe(len(texts))
    start = time.perf_counter()
    try:
        return await embed(texts)
    except BaseException:
        EMBED_FAILURES.inc()
        raise
    finally:
        EMBED_DURATION.observe(time.perf_counter() - start)


def texts_needed(*, cached: int, embedded: int) -> None:
    EMBED_TEXTS.labels("cache").inc(cached)
    EMBED_TEXTS.labels("embedder").inc(embedded)


def batch_recorded(recorded: Recorded) -> None:
    """Count a batch the coordinator is recording; applied when its actor call succeeds (see above)."""

    def update() -> None:
        BATCHES_RECORDED.inc()
        FILES.labels("indexed").inc(recorded.files_indexed)
        FILES.labels("skipped").inc(recorded.files_skipped)
        FILES.labels("failed").inc(recorded.files_failed)
        CHUNKS_WRITTEN.inc(recorded.chunks_created)

    _after_success(update)


def files_skipped_at_plan(count: int) -> None:
    """Files the planner set aside (binary by content, too large) after its plan committed."""
    FILES.labels("skipped").inc(count)


def job_finished(status: str) -> None:
    JOBS_FINISHED.labels(status).inc()


_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}


def exposed_names(collectors: Iterable[Collector]) -> set[str]:
    """Series names the collectors expose (``_total``, ``_bucket``, ... spelled out), from their descriptions."""
    names: set[str] = set()
    for collector in collectors:
        describe = getattr(collector, "describe", None)
        for family in describe() if describe is not None else ():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def registered_names() -> set[str]:
    """Every series name the worker-side metrics of this module expose."""
    return exposed_names(
        [
            FILES,
            CHUNKS_WRITTEN,
            BATCHES_RECORDED,
            JOBS_FINISHED,
            STAGE_DURATION,
            EMBED_DURATION,
            EMBED_FAILURES,
            EMBED_BATCH_TEXTS,
            EMBED_TEXTS,
        ]
    )
