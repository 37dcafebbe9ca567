"""Dramatiq actors of the indexing pipeline. ``dramatiq actors`` loads this package.

Queues (one per stage, so each can be scaled or placed on its own hosts):
``index.plan``, ``index.chunk``, ``index.embed``, ``index.write``, ``index.coordinate``.
"""

from actors.broker import broker
from actors.coordinator import record_batch, stage_failed
from actors.pipeline import chunk_batch, embed_batch, write_batch
from actors.planning import plan_job

__all__ = ["broker", "chunk_batch", "embed_batch", "plan_job", "record_batch", "stage_failed", "write_batch"]
