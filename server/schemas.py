"""Tool results: one pydantic model per answer, so clients get structured content and a schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy.engine import RowMapping

from models.lifecycle import JobTally, tally_fractions


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class StartResult(BaseModel):
    job_id: str = Field(description="UUID of the job (36 characters)")
    status: str = Field(description="pending or running")
    existing: bool = Field(description="True when an active job for this repository was returned instead")
    repo_path: str


class JobStatus(BaseModel):
    job_id: str
    name: str
    repo_path: str
    status: str = Field(description="pending, running, blocked, completed, failed or cancelled")
    phase: str = Field(description="queued, scanning, chunking, embedding, writing, complete, failed")
    progress_percentage: int = Field(ge=0, le=100, description="Never decreases")
    progress_message: str
    files_total: int | None = Field(
        description="Files this job (re)indexes: new and modified ones (all after an embedder change); "
        "null until the scan ends. The repository's indexable files are files_total + files_unchanged"
    )
    files_indexed: int = Field(description="Files (re)indexed by this job so far")
    files_skipped: int
    files_failed: int
    files_unchanged: int = Field(
        default=0, description="Files whose content hash matched the index: left as they were, not re-read"
    )
    files_removed: int = Field(
        default=0, description="Files dropped from the index: gone from disk, or now ignored or skipped"
    )
    chunks_created: int
    batches_total: int | None
    batches_done: int
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    cancelled_at: str | None
    failed_at: str | None
    searchable_percentage: int = Field(
        default=0, ge=0, le=100, description="Share of this job's files whose text is stored: found by full-text search"
    )
    semantic_percentage: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Share of this job's chunks that have their vector (estimated until every batch is chunked): "
        "found by semantic search. The job completes at 100",
    )
    chunks_embedded: int = Field(default=0, description="Chunks of this job stored with their vector")
    elapsed_seconds: float | None
    files_per_second: float | None = Field(
        description="Files done per second (text and vectors; moves with every embedder call)"
    )
    chunks_per_second: float | None = Field(default=None, description="Chunks given a vector per second")
    eta_seconds: float | None = Field(
        description="Estimated seconds to completion, from the measured rate of the slower phase (text or vectors)"
    )

    @classmethod
    def from_row(cls, row: RowMapping, now: datetime) -> JobStatus:
        started: datetime | None = row["started_at"]
        end = row["completed_at"] or row["cancelled_at"] or row["failed_at"] or now
        elapsed = (end - started).total_seconds() if started is not None else None
        figures = job_figures(row)
        rate = chunk_rate = eta = None
        if elapsed and elapsed > 0:
            done = figures.files_done + row["files_failed"]
            if done > 0:
                rate = round(done / elapsed, 2)
            if figures.chunks_embedded:
                chunk_rate = round(figures.chunks_embedded / elapsed, 2)
            if row["status"] == "running":
                eta = job_eta(row, figures, now)
        return cls(
            job_id=str(row["id"]),
            name=row["name"],
            repo_path=row["repo_path"],
            status=row["status"],
            phase=row["phase"],
            progress_percentage=row["progress_percentage"],
            progress_message=row["progress_message"],
            files_total=row["files_total"],
            files_indexed=row["files_indexed"],
            files_skipped=row["files_skipped"],
            files_failed=row["files_failed"],
            files_unchanged=row.get("files_unchanged", 0),
            files_removed=row.get("files_removed", 0),
            chunks_created=row["chunks_created"],
            batches_total=row["batches_total"],
            batches_done=row["batches_done"],
            error_message=row["error_message"],
            created_at=iso(row["created_at"]) or "",
            started_at=iso(started),
            completed_at=iso(row["completed_at"]),
            cancelled_at=iso(row["cancelled_at"]),
            failed_at=iso(row["failed_at"]),
            searchable_percentage=figures.searchable_percentage,
            semantic_percentage=figures.semantic_percentage,
            chunks_embedded=figures.chunks_embedded,
            elapsed_seconds=round(elapsed, 2) if elapsed is not None else None,
            files_per_second=rate,
            chunks_per_second=chunk_rate,
            eta_seconds=eta,
        )


@dataclass(frozen=True, slots=True)
class JobFigures:
    """The two phases' figures of a job row (migration 0006)."""

    searchable_percentage: int
    semantic_percentage: int
    chunks_embedded: int
    #: Files done in both phases (estimated from the embedded share of the stored chunks).
    files_done: float
    text: float
    semantic: float


def job_figures(row: RowMapping) -> JobFigures:
    embedded = int(row.get("chunks_embedded") or 0)
    if row["status"] == "completed":
        return JobFigures(100, 100, embedded, float(row["files_indexed"]), 1.0, 1.0)
    tally = JobTally(
        status=row["status"],
        files_total=int(row["files_total"] or 0),
        batches_total=int(row["batches_total"] or 0),
        batches_done=int(row["batches_done"]),
        files_indexed=int(row["files_indexed"]),
        files_unchanged=int(row.get("files_unchanged") or 0),
        chunks_created=int(row["chunks_created"]),
        progress_percentage=int(row["progress_percentage"]),
        files_searchable=int(row.get("files_searchable") or 0),
        chunks_embedded=embedded,
    )
    if row["files_total"] is None:  # not planned yet: nothing of it is stored
        return JobFigures(0, 0, embedded, 0.0, 0.0, 0.0)
    text, semantic = tally_fractions(tally)
    # Files done: the indexed ones, in the share their chunks' vectors are done.
    share = semantic / text if text > 0 else 0.0
    return JobFigures(int(100 * text), int(100 * semantic), embedded, tally.files_indexed * share, text, semantic)


def job_eta(row: RowMapping, figures: JobFigures, now: datetime) -> float | None:
    """Seconds left: each phase's remaining share at its own measured rate since the plan; the
    slower phase (the bottleneck, the model's for a real embedder) decides."""
    planned: datetime | None = row.get("planned_at")
    if planned is None:
        return None
    seconds = (now - planned).total_seconds()
    if seconds <= 0:
        return None
    left = []
    for done in (figures.text, figures.semantic):
        if done <= 0:
            return None  # a phase with nothing done yet has no rate to extrapolate from
        left.append((1.0 - done) * seconds / done)
    return round(max(left), 1)


class JobList(BaseModel):
    jobs: list[JobStatus]


class SearchHit(BaseModel):
    repository: str = Field(description="Repository name")
    repository_path: str = Field(description="Absolute path of the repository")
    file_path: str = Field(description="Path of the file, relative to the repository")
    start_line: int = Field(description="First line of the chunk (1-based, inclusive)")
    end_line: int = Field(description="Last line of the chunk (inclusive)")
    language: str
    symbol: str | None = Field(description="First function or class defined in the chunk, where known")
    snippet: str = Field(description="The chunk's text")
    score: float = Field(
        description="Higher is better. hybrid: reciprocal-rank-fusion score; vector: cosine similarity; "
        "text: PostgreSQL ts_rank; halved for implementation hits with under 8 code lines under more comment"
    )
    vector_rank: int | None = Field(description="Rank among the semantic (embedding) candidates; null if not one")
    text_rank: int | None = Field(description="Rank among the full-text candidates; null if not one")
    role: str = Field(
        default="code", description="What the file is for, from its path: code, test, fixture, example or docs"
    )
    stale: bool | None = Field(
        default=None,
        description="True when the file changed on disk (or is gone) since it was indexed: the snippet may be "
        "out of date; false when it is as indexed; null when the server cannot read it",
    )


class SearchResult(BaseModel):
    query: str
    mode: str = Field(
        description="The mode used: hybrid (default), vector or text; text when no embedder answered (see message)"
    )
    results: list[SearchHit]
    message: str | None = Field(
        default=None,
        description="Why the results are empty, or what to do next; for repositories still being indexed, how much "
        "was searched by meaning and by words ('index in progress: gin: semantic 34 %, text 100 %')",
    )


class Repository(BaseModel):
    name: str
    path: str
    files: int = Field(description="Files in the index")
    chunks: int = Field(description="Chunks in the index")
    languages: list[str] = Field(description="Languages of the indexed files")
    created_at: str
    last_indexed_at: str | None = Field(description="End of the last completed indexing job")
    embedder: str | None = Field(description="Embedder of the last completed job (e.g. local:all-MiniLM-L6-v2)")
    dimension: int | None = Field(description="Embedding dimension of the last completed job")
    active_job_id: str | None = Field(description="A pending, running or blocked job on the repository")
    active_job_status: str | None
    watched: bool = Field(default=False, description="Re-indexed on every save (watch_repository)")
    watch_caught_up_at: str | None = Field(
        default=None, description="End of the last job the watch started that completed: the index matched the disk"
    )
    watch_error: str | None = Field(default=None, description="Why the watch cannot keep the index fresh now")


class WatchResult(BaseModel):
    name: str
    path: str
    watched: bool = Field(description="Whether the repository is now watched")
    changed: bool = Field(description="False when it already was (or was not) watched")
    watch_caught_up_at: str | None


class RepositoryList(BaseModel):
    repositories: list[Repository]


class DeletedRepository(BaseModel):
    name: str
    path: str
    files_deleted: int
    chunks_deleted: int
    jobs_deleted: int = Field(description="Finished jobs of the repository, removed with it")
