"""Two phases, one job: chunks are stored (full-text searchable) before their vectors (issue 12).

- ``chunks.embedding`` may be NULL: the text phase stores a batch's chunks with the vectors the
  embedding cache already knows and NULL for the others; the vector phase fills them in.
- ``index_batches`` gains the state ``searchable`` (text recorded, vectors pending) and
  ``chunks_embedded`` (the batch's chunks that have a vector).
- ``indexing_jobs`` gains ``files_searchable``, ``batches_searchable`` and ``chunks_embedded``:
  what ``searchable_percentage``, ``semantic_percentage`` and the ETA are computed from.

Batches in flight under the old pipeline carried their chunks (``chunked``) or vectors
(``embedded``) in a message the new stages do not read: they go back to ``queued``, idle, so
the server's upkeep re-sends them from the chunk stage at once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = "'pending','queued','chunked','embedded','written','recorded','cancelled','failed'"
_NEW_STATES = "'pending','queued','chunked','written','searchable','embedded','recorded','cancelled','failed'"


def upgrade() -> None:
    op.execute("ALTER TABLE chunks ALTER COLUMN embedding DROP NOT NULL")
    op.execute("ALTER TABLE index_batches DROP CONSTRAINT index_batches_state_check")
    op.execute(
        "UPDATE index_batches SET state = 'queued', updated_at = now() - interval '1 day' "
        "WHERE state IN ('chunked', 'embedded')"
    )
    op.execute(f"ALTER TABLE index_batches ADD CONSTRAINT index_batches_state_check CHECK (state IN ({_NEW_STATES}))")
    op.execute("ALTER TABLE index_batches ADD COLUMN chunks_embedded integer NOT NULL DEFAULT 0")
    for column in ("files_searchable", "batches_searchable", "chunks_embedded"):
        op.execute(f"ALTER TABLE indexing_jobs ADD COLUMN {column} integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    for column in ("files_searchable", "batches_searchable", "chunks_embedded"):
        op.execute(f"ALTER TABLE indexing_jobs DROP COLUMN {column}")
    op.execute("ALTER TABLE index_batches DROP COLUMN chunks_embedded")
    op.execute("ALTER TABLE index_batches DROP CONSTRAINT index_batches_state_check")
    # The old pipeline cannot resume a batch between the phases: it is chunked again.
    op.execute(
        "UPDATE index_batches SET state = 'queued', updated_at = now() - interval '1 day' "
        "WHERE state IN ('chunked', 'searchable', 'embedded')"
    )
    op.execute(f"ALTER TABLE index_batches ADD CONSTRAINT index_batches_state_check CHECK (state IN ({_OLD_STATES}))")
    # Chunks without a vector cannot exist in the old schema; their files are indexed again.
    op.execute("DELETE FROM files WHERE id IN (SELECT file_id FROM chunks WHERE embedding IS NULL)")
    op.execute("ALTER TABLE chunks ALTER COLUMN embedding SET NOT NULL")
