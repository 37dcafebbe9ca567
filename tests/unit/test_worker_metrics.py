"""Worker metrics: stage timing, and counts applied only when the actor call succeeds."""

from __future__ import annotations

import pytest

from actors import metrics
from models.ledger import Recorded


def files_indexed() -> float:
    value = metrics.REGISTRY.get_sample_value("codebase_mcp_files_total", {"outcome": "indexed"})
    assert value is not None
    return value


def stage_count(stage: str) -> float:
    value = metrics.REGISTRY.get_sample_value("codebase_mcp_batch_stage_duration_seconds_count", {"stage": stage})
    assert value is not None
    return value


async def test_counts_apply_after_a_successful_call() -> None:
    @metrics.timed_stage("record")
    async def record() -> str:
        metrics.batch_recorded(Recorded(3, 2, 1, 0, 7))
        assert files_indexed() == before, "applied before the call returned"
        return "done"

    before, calls = files_indexed(), stage_count("record")
    assert await record() == "done"
    assert files_indexed() == before + 2
    assert stage_count("record") == calls + 1


async def test_counts_of_a_failed_call_are_dropped_but_its_time_is_observed() -> None:
    @metrics.timed_stage("record")
    async def record() -> None:
        metrics.batch_recorded(Recorded(3, 2, 1, 0, 7))
        raise RuntimeError("commit failed")

    before, calls = files_indexed(), stage_count("record")
    with pytest.raises(RuntimeError):
        await record()
    assert files_indexed() == before
    assert stage_count("record") == calls + 1


async def test_timed_embed_counts_failures_and_batch_sizes() -> None:
    async def broken(texts: object) -> None:
        raise ConnectionError("down")

    failures = metrics.REGISTRY.get_sample_value("codebase_mcp_embedding_request_failures_total") or 0.0
    sizes = metrics.REGISTRY.get_sample_value("codebase_mcp_embedding_batch_texts_sum") or 0.0
    with pytest.raises(ConnectionError):
        await metrics.timed_embed(broken, ["a", "b", "c"])
    assert metrics.REGISTRY.get_sample_value("codebase_mcp_embedding_request_failures_total") == failures + 1
    assert metrics.REGISTRY.get_sample_value("codebase_mcp_embedding_batch_texts_sum") == sizes + 3


def test_not_a_worker_process_here() -> None:
    # Under pytest no dramatiq CLI is loaded: the metrics stay in-process (no multiprocess files).
    assert not metrics.in_worker_process()
