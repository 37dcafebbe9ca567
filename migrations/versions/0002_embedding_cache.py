"""Embedding cache keyed by (embedder, sha256 of the text); ledger counters of embedder work.

The cache is also the embed stage's checkpoint: a batch redelivered after a crash finds the
sub-batches it had finished and embeds only the rest.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Same vector type as chunks.embedding, whatever dimension the database was created with.
    vector_type = op.get_bind().scalar(
        sa.text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
        )
    )
    if vector_type is None or not vector_type.startswith("vector("):
        raise RuntimeError(f"unexpected chunks.embedding type {vector_type!r}")
    op.execute(
        f"""
        CREATE TABLE embedding_cache (
            embedder text NOT NULL,
            text_hash bytea NOT NULL,
            embedding {vector_type} NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (embedder, text_hash)
        )
        """
    )
    op.execute(
        "ALTER TABLE index_batches ADD COLUMN texts_embedded integer NOT NULL DEFAULT 0, "
        "ADD COLUMN texts_cached integer NOT NULL DEFAULT 0"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE index_batches DROP COLUMN texts_embedded, DROP COLUMN texts_cached")
    op.execute("DROP TABLE embedding_cache")
