"""A job's vocabulary: its statuses and phases, the progress scale, and every message a client sees.

Pure values and functions, no I/O: :mod:`models.jobs` (the only writer of ``indexing_jobs``) stores
what these functions return, so a message or a status set is written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """``indexing_jobs.status``. A ``str`` enum: the stored values are the members' values."""

    PENDING = "pending"
    RUNNING = "running"
    #: Active, waiting for a backend (the embedder); keeps its running slot and resumes by itself.
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """``indexing_jobs.phase``: what the job is doing (or waits for)."""

    QUEUED = "queued"
    SCANNING = "scanning"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    WRITING = "writing"
    COMPLETE = "complete"
    FAILED = "failed"


#: Plain strings (what the database and drivers see), each set defined once.
#: Active: the repository has a job in progress (admission returns it instead of a new one).
ACTIVE_STATUSES: tuple[str, ...] = (JobStatus.PENDING.value, JobStatus.RUNNING.value, JobStatus.BLOCKED.value)
#: Live: the pipeline moves on (batches flow) and the job holds a running slot.
LIVE_STATUSES: tuple[str, ...] = (JobStatus.RUNNING.value, JobStatus.BLOCKED.value)
TERMINAL_STATUSES: tuple[str, ...] = (
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    JobStatus.CANCELLED.value,
)
JOB_STATUSES: tuple[str, ...] = ACTIVE_STATUSES + TERMINAL_STATUSES

#: Scanning and hashing are given the first few percent of the progress bar; batches fill the rest.
SCAN_SHARE = 5

WAITING_FOR_WORKER = "scanning: waiting for a worker"
WAITING_FOR_SLOT = "queued: waiting for a free job slot"


def scan_listing_message(root: object) -> str:
    return f"scanning: listing files under {root}"


def scan_hashing_message(done: int, total: int) -> str:
    return f"scanning: hashed {done:,}/{total:,} files to find what changed"


def scan_percentage(done: int, total: int) -> int:
    return (SCAN_SHARE - 1) * done // total


def planned_message(*, changed: int, batches: int, unchanged: int, removed: int, skipped: int, note: str = "") -> str:
    """The progress message once the plan is written, e.g. ``chunking: 12 files in 1 batch to index, ...``."""
    parts = [
        f"{changed:,} file{'s' if changed != 1 else ''} in {batches:,} batch{'es' if batches != 1 else ''} to index"
    ]
    parts += [f"{unchanged:,} unchanged"] if unchanged else []
    parts += [f"{removed:,} removed"] if removed else []
    parts += [f"{skipped:,} skipped"] if skipped else []
    return "chunking: " + (f"{note}: " if note else "") + ", ".join(parts)


#: States of a batch between dispatch and recording, and the pipeline stage each one waits for.
#: A job has two phases (issue 12): ``queued → chunked → written`` is the text phase (chunk, store
#: the chunks, record them: the batch is then full-text searchable), ``searchable → embedded`` the
#: vector phase (embed the stored chunks still without a vector, record them).
IN_FLIGHT_STAGE = {
    "queued": "chunking",
    "chunked": "writing",
    "written": "writing",
    "searchable": "embedding",
    "embedded": "embedding",
}
#: The text window: what ``BATCHES_IN_FLIGHT`` bounds and the coordinator tops up. Batches waiting
#: for the embedder are not in it, so the text phase runs ahead across the whole repository.
TEXT_WINDOW_STATES: tuple[str, ...] = ("queued", "chunked", "written")
#: The stages in pipeline order (ties of :func:`describe_progress` go to the later one).
STAGES: tuple[str, ...] = ("chunking", "writing", "embedding")
#: Share of the bar after the scan that the text phase fills; the vector phase (the model's work,
#: and what completes the job) fills the rest.
TEXT_SHARE = 20


def describe_progress(
    counts: Mapping[str, int],
    *,
    files_done: int,
    files_total: int,
    files_indexed: int,
    chunks: int,
    unchanged: int = 0,
    chunks_embedded: int | None = None,
) -> tuple[str, str]:
    """The phase (the pipeline stage most in-flight batches wait for) and a message naming it.

    ``files_done`` counts the files whose text is stored (searchable); ``files_total`` the files this
    job (re)indexes; ``unchanged`` the ones it skipped; ``chunks_embedded`` the chunks with a vector.
    """
    stages = dict.fromkeys(STAGES, 0)
    for state, stage in IN_FLIGHT_STAGE.items():
        stages[stage] += counts.get(state, 0)
    # Ties go to the later stage: work further along is what finishes the job.
    phase = max(reversed(STAGES), key=lambda stage: stages[stage]) if any(stages.values()) else "chunking"
    kept = f", {unchanged:,} unchanged" if unchanged else ""
    vectors = f", {chunks_embedded:,}/{chunks:,} chunks embedded" if chunks_embedded is not None else ""
    message = (
        f"{phase}: {files_done:,}/{files_total:,} files processed, {files_indexed:,} indexed, {chunks:,} chunks"
        f"{vectors}{kept} (in flight: {stages['chunking']} chunking, {stages['writing']} writing, "
        f"{stages['embedding']} embedding)"
    )
    return phase, message


@dataclass(frozen=True, slots=True)
class JobTally:
    """The job's figures as the coordinator reads them, locked."""

    status: str
    files_total: int
    batches_total: int
    batches_done: int
    files_indexed: int
    files_unchanged: int
    chunks_created: int
    progress_percentage: int
    #: Files of the batches whose text is recorded, and chunks with a vector (migration 0006).
    files_searchable: int = 0
    chunks_embedded: int = 0


def searchable_fraction(*, files_total: int, files_searchable: int) -> float:
    """The share of the job's files whose text is stored and recorded (1.0 for a job with none)."""
    if files_total <= 0:
        return 1.0
    return min(files_searchable / files_total, 1.0)


def semantic_fraction(*, files_total: int, files_searchable: int, chunks_created: int, chunks_embedded: int) -> float:
    """The share of the job's chunks that have a vector, estimated before every batch is chunked.

    The chunks of the batches not yet stored are unknown: they are taken to be as many per file as
    in the stored ones, so the figure is the searchable share times the embedded share of the stored chunks.
    """
    text = searchable_fraction(files_total=files_total, files_searchable=files_searchable)
    if chunks_created <= 0:
        return text
    return text * min(chunks_embedded / chunks_created, 1.0)


def overall_percentage(text: float, semantic: float) -> int:
    """``progress_percentage`` from the two phases' fractions; never 100 before completion."""
    done = (TEXT_SHARE * text + (100 - TEXT_SHARE) * semantic) / 100
    return min(99, SCAN_SHARE + int((100 - SCAN_SHARE) * done))


def tally_fractions(tally: JobTally) -> tuple[float, float]:
    """``(searchable, semantic)`` fractions of a job's tally."""
    text = searchable_fraction(files_total=tally.files_total, files_searchable=tally.files_searchable)
    semantic = semantic_fraction(
        files_total=tally.files_total,
        files_searchable=tally.files_searchable,
        chunks_created=tally.chunks_created,
        chunks_embedded=tally.chunks_embedded,
    )
    return text, semantic


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """What recording a batch's text or vectors, or one embedder call, does to the job's progress."""

    phase: str
    message: str
    percentage: int  # stored as GREATEST(old, this): progress never goes back
    #: The ``progress`` event's detail when the bar crossed a 10 % step, else None.
    event: dict[str, Any] | None


def last_batch(tally: JobTally) -> bool:
    """True when the batch whose vectors are being recorded is the job's last one."""
    return tally.batches_done + 1 >= tally.batches_total


def progress_of(tally: JobTally, *, counts: Mapping[str, int], before: int) -> BatchProgress:
    """The job's progress from its tally (counters already updated); ``before`` is the stored percentage."""
    text, semantic = tally_fractions(tally)
    percentage = overall_percentage(text, semantic)
    phase, message = describe_progress(
        counts,
        files_done=tally.files_searchable,
        files_total=tally.files_total,
        files_indexed=tally.files_indexed,
        chunks=tally.chunks_created,
        unchanged=tally.files_unchanged,
        chunks_embedded=tally.chunks_embedded,
    )
    event = None
    if percentage // 10 > before // 10:
        event = {
            "percentage": percentage,
            "batches_done": tally.batches_done,
            "searchable_percentage": int(100 * text),
            "semantic_percentage": int(100 * semantic),
        }
    return BatchProgress(phase, message, percentage, event)


def completion_message(
    *,
    files_total: int,
    files_indexed: int,
    chunks_created: int,
    files_unchanged: int,
    files_removed: int,
    files_skipped: int,
    files_failed: int,
    seconds: float,
    note: str | None = None,
) -> str:
    """The final progress message: ``up to date: ...`` when the job had nothing to (re)index.

    ``note`` (why the job re-indexed everything, for instance) is appended in parentheses.
    """
    suffix = f" ({note})" if note else ""
    if files_total == 0 and files_failed == 0 and (files_unchanged or files_removed):
        parts = [f"{files_unchanged:,} files unchanged"]
        parts += [f"{files_removed:,} removed"] if files_removed else []
        parts += [f"{files_skipped:,} skipped"] if files_skipped else []
        return f"up to date: {', '.join(parts)} (checked in {seconds:.1f} s){suffix}"
    parts = [f"{files_indexed:,} files indexed", f"{chunks_created:,} chunks"]
    parts += [f"{files_unchanged:,} unchanged"] if files_unchanged else []
    parts += [f"{files_removed:,} removed"] if files_removed else []
    parts += [f"{files_skipped:,} skipped", f"{files_failed:,} failed"]
    return f"complete: {', '.join(parts)} in {seconds:.1f} s{suffix}"


def cancelled_message(*, percentage: int, files_indexed: int, chunks_created: int) -> str:
    return f"cancelled at {percentage}%: {files_indexed} files indexed, {chunks_created} chunks kept"


def failed_message(error: str) -> str:
    return f"failed: {error}"


def waiting_message(backend: str) -> str:
    return f"waiting for the embedding service ({backend})"


def resumed_message(backend: str) -> str:
    return f"embedding: the embedding service ({backend}) answers again"


def blocked_failure(backend: str, seconds: float, error: str) -> str:
    return f"the embedding service ({backend}) stayed unreachable for {seconds:.0f} s: {error}"
