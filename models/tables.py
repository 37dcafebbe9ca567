"""Table definitions (SQLAlchemy Core). The migrations in ``migrations/`` create exactly these."""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

#: Job statuses. ``blocked`` is an active job waiting for a backend; the last three are terminal.
ACTIVE_STATUSES = ("pending", "running", "blocked")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
JOB_STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES


def _now_column(name: str, *, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=None if nullable else func.now())


repositories = Table(
    "repositories",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("embedder", Text, nullable=True),
    Column("dimension", Integer, nullable=True),
    _now_column("created_at"),
    _now_column("last_indexed_at", nullable=True),
)

files = Table(
    "files",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("repository_id", UUID(as_uuid=True), ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("path", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("job_id", UUID(as_uuid=True), nullable=True),
    _now_column("indexed_at"),
)


#: ``embedding`` is ``vector(N)`` in the database, N fixed by the embedder when the schema is created.
chunks = Table(
    "chunks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("file_id", BigInteger, ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
    Column("repository_id", UUID(as_uuid=True), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("start_line", Integer, nullable=False),
    Column("end_line", Integer, nullable=False),
    Column("language", Text, nullable=False),
    Column("symbol", Text, nullable=True),
    Column("content", Text, nullable=False),
    Column("embedding", Vector(), nullable=False),
)

indexing_jobs = Table(
    "indexing_jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("repository_id", UUID(as_uuid=True), ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("repo_path", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("progress_percentage", SmallInteger, nullable=False),
    Column("progress_message", Text, nullable=False),
    Column("files_total", Integer, nullable=True),
    Column("files_indexed", Integer, nullable=False),
    Column("files_skipped", Integer, nullable=False),
    Column("files_failed", Integer, nullable=False),
    Column("chunks_created", Integer, nullable=False),
    Column("batches_total", Integer, nullable=True),
    Column("batches_done", Integer, nullable=False),
    Column("error_message", Text, nullable=True),
    _now_column("created_at"),
    _now_column("started_at", nullable=True),
    _now_column("planned_at", nullable=True),
    _now_column("completed_at", nullable=True),
    _now_column("cancelled_at", nullable=True),
    _now_column("failed_at", nullable=True),
    _now_column("updated_at"),
)

#: The batch ledger: one row per file batch of a job. ``token`` names the one message allowed to
#: move the batch on; every hop replaces it, so a redelivered or orphaned message is recognised.
index_batches = Table(
    "index_batches",
    metadata,
    Column("job_id", UUID(as_uuid=True), ForeignKey("indexing_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("batch_no", Integer, primary_key=True),
    Column("files", JSONB, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("byte_count", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("token", UUID(as_uuid=True), nullable=True),
    Column("dispatches", Integer, nullable=False),
    Column("chunk_runs", Integer, nullable=False),
    Column("embed_runs", Integer, nullable=False),
    Column("write_runs", Integer, nullable=False),
    Column("files_indexed", Integer, nullable=False),
    Column("files_skipped", Integer, nullable=False),
    Column("files_failed", Integer, nullable=False),
    Column("chunks_created", Integer, nullable=False),
    Column("error", Text, nullable=True),
    _now_column("created_at"),
    _now_column("dispatched_at", nullable=True),
    _now_column("written_at", nullable=True),
    _now_column("recorded_at", nullable=True),
    _now_column("updated_at"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", UUID(as_uuid=True), ForeignKey("indexing_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("event", Text, nullable=False),
    Column("detail", JSONB, nullable=True),
    _now_column("at"),
)
