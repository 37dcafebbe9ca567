"""``models.lifecycle.describe_progress``: which stage a job waits for, and the message naming it."""

from __future__ import annotations

import pytest

from models.lifecycle import describe_progress


def _describe(counts: dict[str, int], **kwargs: int) -> tuple[str, str]:
    figures = {"files_done": 10, "files_total": 100, "files_indexed": 9, "chunks": 50}
    figures.update(kwargs)
    return describe_progress(counts, **figures)


@pytest.mark.parametrize(
    ("counts", "phase"),
    [
        ({"queued": 5, "chunked": 1, "embedded": 1}, "chunking"),
        ({"queued": 1, "chunked": 4, "embedded": 2}, "embedding"),
        ({"queued": 1, "chunked": 1, "embedded": 3}, "writing"),
        # "written" batches wait for the coordinator, counted with writing.
        ({"queued": 2, "chunked": 2, "embedded": 1, "written": 2}, "writing"),
        ({"written": 1}, "writing"),
        ({"chunked": 1}, "embedding"),
    ],
)
def test_phase_is_the_stage_with_most_batches_in_flight(counts: dict[str, int], phase: str) -> None:
    assert _describe(counts)[0] == phase


def test_pending_and_recorded_batches_are_not_in_flight() -> None:
    phase, message = _describe({"pending": 50, "recorded": 40, "chunked": 1})
    assert phase == "embedding"
    assert "0 chunking, 1 embedding, 0 writing" in message


@pytest.mark.parametrize(
    ("counts", "phase"),
    [
        ({"queued": 2, "chunked": 2}, "embedding"),
        ({"queued": 3, "embedded": 3}, "writing"),
        ({"queued": 1, "chunked": 1, "embedded": 1}, "writing"),
    ],
)
def test_ties_go_to_the_later_stage(counts: dict[str, int], phase: str) -> None:
    assert _describe(counts)[0] == phase


def test_nothing_in_flight_reports_chunking() -> None:
    phase, message = _describe({})
    assert phase == "chunking"
    assert message.startswith("chunking:")


def test_message_names_the_phase_and_every_count() -> None:
    phase, message = describe_progress(
        {"queued": 3, "chunked": 7, "embedded": 2, "written": 1},
        files_done=1234,
        files_total=15000,
        files_indexed=1200,
        chunks=56789,
    )
    assert phase == "embedding"
    assert message.startswith("embedding:")
    assert "1,234/15,000 files processed" in message
    assert "1,200 indexed" in message
    assert "56,789 chunks" in message
    assert "3 chunking, 7 embedding, 3 writing" in message
