"""``get_indexing_status``'s two-phase figures (issue 12): searchable and semantic shares, rates, ETA."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from server.schemas import JobStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "gin",
        "repo_path": "/r/gin",
        "status": "running",
        "phase": "embedding",
        "progress_percentage": 40,
        "progress_message": "embedding: ...",
        "files_total": 1000,
        "files_indexed": 800,
        "files_skipped": 0,
        "files_failed": 0,
        "files_unchanged": 0,
        "files_removed": 0,
        "chunks_created": 4000,
        "batches_total": 10,
        "batches_done": 2,
        "files_searchable": 800,
        "batches_searchable": 8,
        "chunks_embedded": 1000,
        "error_message": None,
        "created_at": NOW - timedelta(seconds=110),
        "started_at": NOW - timedelta(seconds=100),
        "planned_at": NOW - timedelta(seconds=90),
        "completed_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "updated_at": NOW,
    }
    base.update(changes)
    return base


def test_a_running_job_reports_both_phases_and_the_slower_one_sets_the_eta() -> None:
    status = JobStatus.from_row(row(), NOW)  # type: ignore[arg-type]
    assert status.searchable_percentage == 80
    assert status.semantic_percentage == 20  # 80 % stored, a quarter of those chunks embedded
    assert status.chunks_embedded == 1000 and status.chunks_per_second == 10.0
    assert status.files_per_second == 2.0  # 800 files × 1/4 of their vectors, over 100 s
    # Text: 80 % in 90 s, 22.5 s left; vectors: 20 % in 90 s, 360 s left: the model decides.
    assert status.eta_seconds == 360.0


def test_an_unplanned_job_has_no_eta_and_nothing_searchable() -> None:
    status = JobStatus.from_row(row(files_total=None, planned_at=None, files_searchable=0, chunks_embedded=0), NOW)  # type: ignore[arg-type]
    assert (status.searchable_percentage, status.semantic_percentage, status.eta_seconds) == (0, 0, None)


def test_a_completed_job_is_fully_searchable_both_ways() -> None:
    done = row(status="completed", completed_at=NOW, chunks_embedded=4000, files_indexed=1000, files_searchable=1000)
    status = JobStatus.from_row(done, NOW)  # type: ignore[arg-type]
    assert (status.searchable_percentage, status.semantic_percentage, status.eta_seconds) == (100, 100, None)
    assert status.files_per_second == 10.0
