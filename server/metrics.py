"""The MCP server's metrics: every metric object of the server process is here.

Two kinds:

* Instruments updated as things happen: MCP tool calls (``server.app.ToolMetrics``, a
  ``ServerMiddleware``, sees every ``tools/call``) and status-query latency. The middleware lives
  with the MCP server: this module imports no MCP SDK, so the CLI can ask the broker's queues
  (:func:`queue_stats`) without loading it (~0.9 CPU-s).
* Gauges read at scrape time from PostgreSQL and RabbitMQ by :class:`StateCollector`: jobs by
  status, progress of running jobs, ledger lag, queue depth and consumers. Queries are async, the
  Prometheus collector interface is not: the ``/metrics`` handler awaits :meth:`StateCollector.refresh`
  on the server's loop and then renders; a scrape arriving from another thread (the stdio mode's
  metrics port) asks the loop for a refresh and waits for it.

Labels are low-cardinality by construction: tool names from the registered tools only, fixed
status/state/queue sets; never a job id or a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pika
from dramatiq.common import xq_name
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.messages import ALL_QUEUES
from actors.metrics import exposed_names
from models.ledger import IN_FLIGHT_STAGE
from models.lifecycle import ACTIVE_STATUSES, JOB_STATUSES, LIVE_STATUSES

logger = logging.getLogger(__name__)

#: Ledger states of a batch not yet recorded: ``pending`` (planned, not dispatched) and in flight.
LEDGER_STATES = ("pending", *IN_FLIGHT_STAGE)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: A scrape never waits longer than this for the database or the broker.
SOURCE_TIMEOUT_SECONDS = 5.0
#: Scrapes closer together than this share one snapshot.
_FRESH_SECONDS = 1.0

TOOL_CALLS = Counter(
    "codebase_mcp_tool_calls",
    "MCP tool calls, by tool and outcome (ok, error: the tool answered is_error, exception: a protocol error).",
    ["tool", "outcome"],
)
TOOL_DURATION = Histogram(
    "codebase_mcp_tool_call_duration_seconds",
    "Latency of MCP tool calls, by tool and outcome.",
    ["tool", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
STATUS_QUERY_DURATION = Histogram(
    "codebase_mcp_status_query_duration_seconds",
    "Latency of one job-status query (the get_indexing_status tool's database work).",
    buckets=_LATENCY_BUCKETS,
)

_INSTRUMENTS = (TOOL_CALLS, TOOL_DURATION, STATUS_QUERY_DURATION)


@dataclass
class JobSummary:
    """What ``/healthz`` and the job gauges report."""

    by_status: dict[str, int]
    oldest_running_seconds: float | None
    running_files_planned: int
    running_files_processed: int

    @property
    def active(self) -> int:
        return sum(self.by_status.get(status, 0) for status in ACTIVE_STATUSES)


async def job_summary(engine: AsyncEngine) -> JobSummary:
    async with engine.connect() as conn:
        counts = {
            row.status: int(row.n)
            for row in await conn.execute(text("SELECT status, count(*) AS n FROM indexing_jobs GROUP BY status"))
        }
        row = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM now() - min(started_at)) AS oldest, "
                    "coalesce(sum(files_total), 0) AS planned FROM indexing_jobs WHERE status = 'running'"
                )
            )
        ).one()
        processed = await conn.scalar(
            text(
                "SELECT coalesce(sum(b.file_count), 0) FROM index_batches b JOIN indexing_jobs j ON j.id = b.job_id "
                # Text recorded (two phases, issue 12): the files are stored and found by full text.
                "WHERE j.status = 'running' AND b.state IN ('searchable', 'embedded', 'recorded')"
            )
        )
    return JobSummary(
        by_status={status: counts.get(status, 0) for status in JOB_STATUSES},
        oldest_running_seconds=float(row.oldest) if row.oldest is not None else None,
        running_files_planned=int(row.planned),
        running_files_processed=int(processed or 0),
    )


async def _ledger_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT b.state, count(*) AS n FROM index_batches b JOIN indexing_jobs j ON j.id = b.job_id "
                "WHERE j.status = ANY(:live) AND b.state = ANY(:states) GROUP BY b.state"
            ),
            {"live": list(LIVE_STATUSES), "states": list(LEDGER_STATES)},
        )
        found = {row.state: int(row.n) for row in rows}
    return {state: found.get(state, 0) for state in LEDGER_STATES}


class _NoMissingQueueWarnings(logging.Filter):
    """pika warns when a passive declare finds no queue; for these probes that is an answer, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NOT_FOUND - no queue" not in record.getMessage()


logging.getLogger("pika.channel").addFilter(_NoMissingQueueWarnings())


def queue_stats(broker_url: str, queues: Iterable[str]) -> dict[str, tuple[int, int]]:
    """``{queue: (messages ready, consumers)}`` by passive declares; a missing queue is left out."""
    params = pika.URLParameters(broker_url)
    params.socket_timeout = SOURCE_TIMEOUT_SECONDS
    params.blocked_connection_timeout = SOURCE_TIMEOUT_SECONDS
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    stats: dict[str, tuple[int, int]] = {}
    try:
        channel = connection.channel()
        for queue in queues:
            try:
                method = channel.queue_declare(queue, passive=True).method
            except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet (no message ever sent)
                channel = connection.channel()
                continue
            stats[queue] = (int(method.message_count), int(method.consumer_count))
    finally:
        if connection.is_open:
            connection.close()
    return stats


@dataclass
class _Snapshot:
    taken: float = 0.0
    jobs: JobSummary | None = None
    ledger: dict[str, int] = field(default_factory=dict)
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)
    database_up: bool = False
    broker_up: bool = False


class StateCollector(Collector):
    """Gauges computed from the database and the broker when Prometheus scrapes."""

    def __init__(self, engine: AsyncEngine, broker_url: str) -> None:
        """Create on the event loop that owns ``engine``."""
        self._engine = engine
        self._broker_url = broker_url
        self._snapshot = _Snapshot()
        self._loop = asyncio.get_running_loop()
        self._lock: asyncio.Lock | None = None

    async def refresh(self) -> None:
        """Re-read the sources unless a snapshot younger than a second exists; never raises."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self._snapshot.taken < _FRESH_SECONDS:
                return
            snapshot = _Snapshot()
            try:
                async with asyncio.timeout(SOURCE_TIMEOUT_SECONDS):
                    snapshot.jobs = await job_summary(self._engine)
                    snapshot.ledger = await _ledger_counts(self._engine)
                snapshot.database_up = True
            except Exception as error:  # a scrape reports the outage as a gauge, it does not fail
                logger.warning("metrics: database unreadable: %s", error)
            all_queues = [name for queue in ALL_QUEUES for name in (queue, xq_name(queue))]
            try:
                snapshot.queues = await asyncio.to_thread(queue_stats, self._broker_url, all_queues)
                snapshot.broker_up = True
            except Exception as error:
                logger.warning("metrics: broker unreadable: %s", error)
            snapshot.taken = time.monotonic()
            self._snapshot = snapshot

    def _refresh_from_thread(self) -> None:
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is self._loop:
                return  # on the loop itself: the /metrics handler refreshed before rendering
        if not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self.refresh(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=2 * SOURCE_TIMEOUT_SECONDS + 1)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        self._refresh_from_thread()
        snap = self._snapshot
        up = GaugeMetricFamily(
            "codebase_mcp_metrics_source_up",
            "Whether the last scrape could read the source (database, broker): 1 yes, 0 no.",
            labels=["source"],
        )
        up.add_metric(["database"], 1.0 if snap.database_up else 0.0)
        up.add_metric(["broker"], 1.0 if snap.broker_up else 0.0)
        yield up
        jobs = GaugeMetricFamily("codebase_mcp_jobs", "Jobs in the database, by status.", labels=["status"])
        oldest = GaugeMetricFamily(
            "codebase_mcp_oldest_running_job_age_seconds", "Age of the oldest running job (0 when none runs)."
        )
        planned = GaugeMetricFamily(
            "codebase_mcp_running_jobs_files_planned", "Files planned by the running jobs (their files_total)."
        )
        processed = GaugeMetricFamily(
            "codebase_mcp_running_jobs_files_processed",
            "Files of the running jobs' batches whose text is recorded so far (stored, found by full text).",
        )
        if snap.jobs is not None:
            for status in JOB_STATUSES:
                jobs.add_metric([status], snap.jobs.by_status.get(status, 0))
            oldest.add_metric([], snap.jobs.oldest_running_seconds or 0.0)
            planned.add_metric([], snap.jobs.running_files_planned)
            processed.add_metric([], snap.jobs.running_files_processed)
        yield from (jobs, oldest, planned, processed)
        ledger = GaugeMetricFamily(
            "codebase_mcp_ledger_batches",
            "Batches of running jobs not yet recorded, by ledger state (pending: not dispatched yet).",
            labels=["state"],
        )
        lag = GaugeMetricFamily(
            "codebase_mcp_ledger_lag_batches", "Batches of running jobs dispatched but not yet recorded."
        )
        if snap.database_up:
            for state, count in snap.ledger.items():
                ledger.add_metric([state], count)
            lag.add_metric([], sum(count for state, count in snap.ledger.items() if state != "pending"))
        yield from (ledger, lag)
        depth = GaugeMetricFamily(
            "codebase_mcp_queue_messages", "Messages ready in a RabbitMQ queue (.XQ: dead letters).", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "codebase_mcp_queue_consumers", "Consumers attached to a RabbitMQ queue.", labels=["queue"]
        )
        for queue, (messages, attached) in sorted(snap.queues.items()):
            depth.add_metric([queue], messages)
            consumers.add_metric([queue], attached)
        yield from (depth, consumers)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Described without touching the database, so registering never does I/O.
        return []


def registered_names() -> set[str]:
    """Every series name the server's own instruments and :class:`StateCollector` expose."""
    return exposed_names(_INSTRUMENTS) | set(STATE_GAUGES)


#: The gauge names :class:`StateCollector` yields (checked by tests against a real scrape).
STATE_GAUGES = (
    "codebase_mcp_metrics_source_up",
    "codebase_mcp_jobs",
    "codebase_mcp_oldest_running_job_age_seconds",
    "codebase_mcp_running_jobs_files_planned",
    "codebase_mcp_running_jobs_files_processed",
    "codebase_mcp_ledger_batches",
    "codebase_mcp_ledger_lag_batches",
    "codebase_mcp_queue_messages",
    "codebase_mcp_queue_consumers",
)
