"""Per-process resources of a worker: settings, database engine and embedder.

Async resources must live on the worker's event loop thread (Dramatiq's ``AsyncIO``
middleware), and the CLI forks after import, so they are created lazily on first use and closed
in ``before_worker_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import get_event_loop_thread
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.embedders import Embedder, build_embedder, configured_dimension_async
from actors.messages import EMBED_QUEUE
from actors.signals import guard_duplicate_sigterm
from models.database import create_engine, resolve_database_url
from models.database_watch import is_database_outage, revive_embedded_postgres_sync
from models.migrate import upgrade_to_head
from models.settings import Settings

logger = logging.getLogger(__name__)


#: Seconds of model time one embedder call should take at most: each call commits its vectors and
#: moves the job's progress, so this bounds the time between progress updates (FR-005: 10 s).
EMBED_CALL_TARGET_SECONDS = 3.0
#: The smallest call the pace chooses: the local model's forward pass (``LOCAL_BATCH_SIZE``) size.
EMBED_CALL_MIN_TEXTS = 16


@dataclass(slots=True)
class EmbedPace:
    """The embedder's measured speed in this process, which sizes its calls.

    ``EMBED_BATCH_SIZE`` texts take 1.3 s on a quiet two-core machine with the bundled model, but
    ten times that when other work shares the cores: calls shrink so that each takes about
    :data:`EMBED_CALL_TARGET_SECONDS` (never below :data:`EMBED_CALL_MIN_TEXTS` nor above the setting).
    """

    seconds_per_text: float | None = None

    def observe(self, texts: int, seconds: float) -> None:
        if texts <= 0 or seconds <= 0:
            return
        measured = seconds / texts
        previous = self.seconds_per_text
        # Smoothed, so one slow call (a pause, a long text) does not halve the next ones.
        self.seconds_per_text = measured if previous is None else 0.7 * previous + 0.3 * measured

    def call_size(self, maximum: int) -> int:
        smallest = min(EMBED_CALL_MIN_TEXTS, maximum)
        if self.seconds_per_text is None:
            # Unmeasured (the process's first call, often right after the model loaded): small, so
            # the job's first vectors, and the speed the next calls are sized by, come soon.
            return smallest
        paced = int(EMBED_CALL_TARGET_SECONDS / self.seconds_per_text)
        return max(smallest, min(paced, maximum))


def preload_local_model(runtime: str, threads: int) -> None:
    """Load the bundled model and run one tiny forward pass through it, at worker boot.

    The first forward pass of a process also pays torch's one-time set-up (allocator, kernels);
    done here, the job's first embedder call runs at the model's speed, as the raw bench's calls
    do after their own warm-up.
    """
    from actors.embedders.local_model import forward, load_model

    resolved, tokenizer, model = load_model(runtime, threads)
    forward(model, resolved, [tokenizer.encode("def warm_up(): return 1").ids])


@dataclass(slots=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    embedder: Embedder
    embed_pace: EmbedPace = field(default_factory=EmbedPace)


class WorkerResources(Middleware):
    """Owns the worker process's engine and embedder; actors call :meth:`get`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._resources: Resources | None = None
        self._lock: asyncio.Lock | None = None
        self._embed_slots: asyncio.Semaphore | None = None

    def embed_slot(self) -> asyncio.Semaphore:
        """At most ``EMBED_CONCURRENCY`` embedder calls in flight per worker process."""
        if self._embed_slots is None:
            self._embed_slots = asyncio.Semaphore(self.settings.embed_concurrency)
        return self._embed_slots

    async def get(self) -> Resources:
        if self._resources is not None:
            return self._resources
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._resources is None:
                self._resources = await self._open()
        return self._resources

    async def _open(self) -> Resources:
        url = await asyncio.to_thread(resolve_database_url, self.settings)
        dimension = await configured_dimension_async(self.settings)
        await upgrade_to_head(url, dimension)
        engine = create_engine(
            url, pool_size=5, idle_in_transaction_seconds=self.settings.db_idle_in_transaction_seconds
        )
        embedder = build_embedder(self.settings, dimension)
        logger.info("worker resources ready (embedder %s, dimension %d)", embedder.name, dimension)
        return Resources(self.settings, engine, embedder)

    async def _close(self) -> None:
        if self._resources is not None:
            await self._resources.embedder.aclose()
            await self._resources.engine.dispose()
            self._resources = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Load the local model in the background now, so the first embed batch does not wait for it
        (only in a process that consumes the embed queue).

        Also makes a process-group SIGTERM stop the worker rather than hang it (actors/signals.py).
        """
        guard_duplicate_sigterm()
        queues = getattr(worker, "consumer_whitelist", None)
        if queues and EMBED_QUEUE not in queues:
            return  # never embeds (``-Q`` without index.embed): the model's memory stays free
        if self.settings.embedder == "local":
            threading.Thread(
                target=preload_local_model,
                args=(self.settings.local_runtime, self.settings.local_threads),
                name="preload-model",
                daemon=True,
            ).start()
        elif self.settings.embedder == "local-int8":
            # Builds the int8 graph on the very first boot (once per data dir, under a file lock).
            from actors.embedders import int8_cache_root
            from actors.embedders.onnx_int8 import load_int8

            threading.Thread(
                target=load_int8,
                args=(int8_cache_root(self.settings), self.settings.local_threads),
                name="preload-model",
                daemon=True,
            ).start()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """A message failed because the embedded PostgreSQL is down: start it again, so the retry can succeed."""
        if exception is not None and is_database_outage(exception):
            revive_embedded_postgres_sync(self.settings)

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        loop_thread: Any = get_event_loop_thread()
        if loop_thread is not None and self._resources is not None:
            loop_thread.run_coroutine(self._close())
