"""The pure "decide" halves of planning and recording (``decide_plan``, ``progress_after_batch``)."""

from __future__ import annotations

import dataclasses

from actors.planning import Fingerprint, decide_plan
from models.lifecycle import SCAN_SHARE, TEXT_SHARE, JobTally, last_batch, progress_of, semantic_fraction

FOUND = [Fingerprint("a.py", 10, "h-a"), Fingerprint("b.py", 20, "h-b2"), Fingerprint("c.py", 30, None)]


def plan(**overrides: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = {
        "indexed": {"a.py": "h-a", "b.py": "h-b", "gone.py": "h-g"},
        "recorded_embedder": "local",
        "recorded_dimension": 384,
        "embedder": "local",
        "dimension": 384,
        "max_files": 1,
        "max_bytes": 1000,
    }
    arguments.update(overrides)
    return decide_plan(FOUND, {"binary": 2}, **arguments)  # type: ignore[arg-type]


def test_incremental_plan_batches_only_changed_and_unreadable_files() -> None:
    decided = plan()
    assert decided.diff.changed == ["b.py", "c.py"]
    assert decided.diff.unchanged == 1
    assert decided.diff.removed == ["gone.py"]
    assert not decided.remove_all
    assert [batch.files for batch in decided.batches] == [
        [{"path": "b.py", "size": 20}],
        [{"path": "c.py", "size": 30}],
    ]
    assert decided.skipped == 2
    assert decided.message == "chunking: 2 files in 2 batches to index, 1 unchanged, 1 removed, 2 skipped"
    assert decided.event == {
        "files": 2,
        "batches": 2,
        "unchanged": 1,
        "removed": 1,
        "skipped": {"binary": 2},
        "full_reindex": False,
    }


def test_embedder_change_reindexes_everything_and_says_why() -> None:
    decided = plan(recorded_dimension=768, max_files=10)
    assert decided.remove_all
    assert decided.diff.changed == ["a.py", "b.py", "c.py"]
    assert decided.diff.unchanged == 0
    assert (
        decided.change_note == "embedder changed from local (768 dimensions) to local (384 dimensions): full re-index"
    )
    assert decided.message.startswith("chunking: embedder changed from local (768 dimensions)")
    assert decided.event["full_reindex"] is True
    assert len(decided.batches) == 1


def test_no_recorded_embedder_or_empty_index_is_not_a_change() -> None:
    assert not plan(recorded_embedder=None, recorded_dimension=None, embedder="other").remove_all
    assert not plan(indexed={}, embedder="other").remove_all


def test_nothing_changed_gives_no_batches() -> None:
    decided = decide_plan(
        [Fingerprint("a.py", 10, "h-a")],
        {},
        indexed={"a.py": "h-a"},
        recorded_embedder="local",
        recorded_dimension=384,
        embedder="local",
        dimension=384,
        max_files=10,
        max_bytes=100,
    )
    assert decided.batches == []
    assert decided.message == "chunking: 0 files in 0 batches to index, 1 unchanged"


TALLY = JobTally(
    status="running",
    files_total=200,
    batches_total=10,
    batches_done=3,
    files_indexed=80,
    files_unchanged=5,
    chunks_created=750,
    progress_percentage=38,
    files_searchable=80,
    chunks_embedded=300,
)


def test_progress_weighs_the_text_phase_and_the_vector_phase() -> None:
    progress = progress_of(TALLY, counts={"queued": 1, "chunked": 1, "searchable": 3, "recorded": 4}, before=30)
    text, semantic = 80 / 200, 80 / 200 * 300 / 750
    done = (TEXT_SHARE * text + (100 - TEXT_SHARE) * semantic) / 100
    assert progress.percentage == SCAN_SHARE + int((100 - SCAN_SHARE) * done) == 24
    assert progress.phase == "embedding"
    assert progress.message.startswith(
        "embedding: 80/200 files processed, 80 indexed, 750 chunks, 300/750 chunks embedded, 5 unchanged"
    )
    assert progress.event is None  # below what is stored: the UPDATE keeps the larger value


def test_progress_event_when_a_ten_percent_step_is_crossed() -> None:
    progress = progress_of(dataclasses.replace(TALLY, chunks_embedded=750), counts={}, before=38)
    assert progress.percentage == 43
    assert progress.event == {
        "percentage": 43,
        "batches_done": 3,
        "searchable_percentage": 40,
        "semantic_percentage": 40,
    }


def test_text_alone_moves_the_bar_only_its_share() -> None:
    only_text = dataclasses.replace(TALLY, files_searchable=200, chunks_created=2000, chunks_embedded=0)
    assert progress_of(only_text, counts={}, before=0).percentage == SCAN_SHARE + (100 - SCAN_SHARE) * TEXT_SHARE // 100


def test_progress_never_reports_100_before_completion() -> None:
    done = dataclasses.replace(TALLY, files_searchable=200, chunks_created=2000, chunks_embedded=2000)
    assert progress_of(done, counts={}, before=0).percentage == 99


def test_semantic_share_is_estimated_from_the_stored_chunks() -> None:
    assert semantic_fraction(files_total=100, files_searchable=50, chunks_created=400, chunks_embedded=100) == 0.125
    assert semantic_fraction(files_total=0, files_searchable=0, chunks_created=0, chunks_embedded=0) == 1.0
    # Batches without chunks (all files skipped) have nothing to embed: as semantic as searchable.
    assert semantic_fraction(files_total=10, files_searchable=5, chunks_created=0, chunks_embedded=0) == 0.5


def test_last_batch() -> None:
    assert not last_batch(TALLY)
    assert last_batch(dataclasses.replace(TALLY, batches_done=9))
