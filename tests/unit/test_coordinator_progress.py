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
        ({"queued": 5, "chunked": 1, "searchable": 1}, "chunking"),
        ({"queued": 1, "chunked": 4, "searchable": 2}, "writing"),
        ({"queued": 1, "chunked": 1, "searchable": 3}, "embedding"),
        # "written" batches wait for the coordinator to record their text, counted with writing;
        # "embedded" ones for it to record their vectors, counted with embedding.
        ({"queued": 2, "chunked": 1, "searchable": 1, "written": 2}, "writing"),
        ({"written": 1}, "writing"),
        ({"embedded": 1}, "embedding"),
        ({"chunked": 1}, "writing"),
    ],
)
def test_phase_is_the_stage_with_most_batches_in_flight(counts: dict[str, int], phase: str) -> None:
    assert _describe(counts)[0] == phase


def test_pending_and_recorded_batches_are_not_in_flight() -> None:
    phase, message = _describe({"pending": 50, "recorded": 40, "searchable": 1})
    assert phase == "embedding"
    assert "0 chunking, 0 writing, 1 embedding" in message


@pytest.mark.parametrize(
    ("counts", "phase"),
    [
        ({"queued": 2, "chunked": 2}, "writing"),
        ({"queued": 3, "searchable": 3}, "embedding"),
        ({"queued": 1, "chunked": 1, "searchable": 1}, "embedding"),
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
        {"queued": 3, "chunked": 7, "searchable": 2, "written": 1},
        files_done=1234,
        files_total=15000,
        files_indexed=1200,
        chunks=56789,
        chunks_embedded=4321,
    )
    assert phase == "writing"
    assert message.startswith("writing:")
    assert "4,321/56,789 chunks embedded" in message
    assert "1,234/15,000 files processed" in message
    assert "1,200 indexed" in message
    assert "56,789 chunks" in message
    assert "3 chunking, 8 writing, 2 embedding" in message
