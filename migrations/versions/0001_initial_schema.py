"""Initial schema: repositories, files, chunks (pgvector + HNSW), jobs, batch ledger, job events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _embedding_dimension() -> int:
    configured = context.config.attributes.get("embedding_dimension")
    if configured is None:
        configured = context.get_x_argument(as_dictionary=True).get("dimension")
    if configured is None:
        from actors.embedders import configured_dimension
        from models.settings import get_settings

        configured = configured_dimension(get_settings())
    dimension = int(configured)
    if not 1 <= dimension <= 2000:
        raise ValueError(f"embedding dimension {dimension} is outside pgvector's HNSW range 1..2000")
    return dimension


def upgrade() -> None:
    dimension = _embedding_dimension()
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE repositories (
            id uuid PRIMARY KEY,
            path text NOT NULL UNIQUE,
            name text NOT NULL,
            embedder text,
            dimension integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_indexed_at timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE files (
            id bigserial PRIMARY KEY,
            repository_id uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
            path text NOT NULL,
            content_hash text NOT NULL,
            language text NOT NULL,
            size_bytes bigint NOT NULL,
            line_count integer NOT NULL,
            job_id uuid,
            indexed_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (repository_id, path)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE chunks (
            id bigserial PRIMARY KEY,
            file_id bigint NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            repository_id uuid NOT NULL,
            ordinal integer NOT NULL,
            start_line integer NOT NULL,
            end_line integer NOT NULL,
            language text NOT NULL,
            symbol text,
            content text NOT NULL,
            embedding vector({dimension}) NOT NULL,
            UNIQUE (file_id, ordinal)
        )
        """
    )
    op.execute("CREATE INDEX chunks_repository_id ON chunks (repository_id)")
    op.execute("CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
    op.execute(
        """
        CREATE TABLE indexing_jobs (
            id uuid PRIMARY KEY,
            repository_id uuid NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
            repo_path text NOT NULL,
            name text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending','running','blocked','completed','failed','cancelled')),
            phase text NOT NULL,
            progress_percentage smallint NOT NULL DEFAULT 0 CHECK (progress_percentage BETWEEN 0 AND 100),
            progress_message text NOT NULL DEFAULT '',
            files_total integer,
            files_indexed integer NOT NULL DEFAULT 0,
            files_skipped integer NOT NULL DEFAULT 0,
            files_failed integer NOT NULL DEFAULT 0,
            chunks_created integer NOT NULL DEFAULT 0,
            batches_total integer,
            batches_done integer NOT NULL DEFAULT 0,
            error_message text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            planned_at timestamptz,
            completed_at timestamptz,
            cancelled_at timestamptz,
            failed_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # FR-012 held by the database itself: one active job per repository path.
    op.execute(
        "CREATE UNIQUE INDEX indexing_jobs_one_active_per_repo ON indexing_jobs (repo_path) "
        "WHERE status IN ('pending','running','blocked')"
    )
    op.execute("CREATE INDEX indexing_jobs_status_created ON indexing_jobs (status, created_at)")
    op.execute("CREATE INDEX indexing_jobs_created ON indexing_jobs (created_at DESC)")
    op.execute(
        """
        CREATE TABLE index_batches (
            job_id uuid NOT NULL REFERENCES indexing_jobs(id) ON DELETE CASCADE,
            batch_no integer NOT NULL,
            files jsonb NOT NULL,
            file_count integer NOT NULL,
            byte_count bigint NOT NULL,
            state text NOT NULL CHECK (state IN
                ('pending','queued','chunked','embedded','written','recorded','cancelled','failed')),
            token uuid,
            dispatches integer NOT NULL DEFAULT 0,
            chunk_runs integer NOT NULL DEFAULT 0,
            embed_runs integer NOT NULL DEFAULT 0,
            write_runs integer NOT NULL DEFAULT 0,
            files_indexed integer NOT NULL DEFAULT 0,
            files_skipped integer NOT NULL DEFAULT 0,
            files_failed integer NOT NULL DEFAULT 0,
            chunks_created integer NOT NULL DEFAULT 0,
            error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            dispatched_at timestamptz,
            written_at timestamptz,
            recorded_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, batch_no)
        )
        """
    )
    op.execute("CREATE INDEX index_batches_job_state ON index_batches (job_id, state)")
    op.execute(
        """
        CREATE TABLE job_events (
            id bigserial PRIMARY KEY,
            job_id uuid NOT NULL REFERENCES indexing_jobs(id) ON DELETE CASCADE,
            event text NOT NULL,
            detail jsonb,
            at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX job_events_job ON job_events (job_id, at)")


def downgrade() -> None:
    for table in ("job_events", "index_batches", "indexing_jobs", "chunks", "files", "repositories"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
