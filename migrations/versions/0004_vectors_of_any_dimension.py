"""Vectors of any dimension in one database: each repository keeps its own embedder's size.

``chunks.embedding`` (and ``embedding_cache.embedding``) becomes an untyped ``vector``. HNSW needs
a fixed dimension, so there is one partial expression index per dimension in use::

    CREATE INDEX chunks_embedding_hnsw_<N> ON chunks USING hnsw ((embedding::vector(N)) vector_cosine_ops)
        WHERE vector_dims(embedding) = N

created on demand by :func:`models.vector_index.ensure_vector_index` (every server and worker
process runs it for its embedder's dimension at start). Search uses the same expression and
predicate, so it walks only the graph of its query's dimension. Existing vectors are kept as they
are: dropping the typmod rewrites nothing, and the old index is rebuilt as the partial one of the
old dimension.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: pgvector's HNSW limit for ``vector``; larger dimensions are searched by an exact scan.
_HNSW_MAX_DIMENSION = 2000


def _index_sql(dimension: int) -> str:
    # Frozen copy of models.vector_index.create_index_sql at this revision (migrations must not drift).
    return (
        f"CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw_{dimension} ON chunks USING hnsw "
        f"((embedding::vector({dimension})) vector_cosine_ops) WHERE vector_dims(embedding) = {dimension}"
    )


def _stored_type() -> str:
    return str(
        op.get_bind().scalar(
            text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
            )
        )
    )


def upgrade() -> None:
    match = re.fullmatch(r"vector\((\d+)\)", _stored_type())
    op.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
    op.execute("ALTER TABLE chunks ALTER COLUMN embedding TYPE vector")
    # The cache is keyed by embedder name, so vectors of several sizes can live side by side in it.
    op.execute("ALTER TABLE embedding_cache ALTER COLUMN embedding TYPE vector")
    # Without it the planner guesses 0.5 % of the rows for ``vector_dims(embedding) = N`` and may
    # prefer another index to the dimension's HNSW index; ANALYZE then counts each dimension.
    op.execute("CREATE STATISTICS IF NOT EXISTS chunks_embedding_dimension ON (vector_dims(embedding)) FROM chunks")
    if match is not None:
        dimension = int(match.group(1))
        # Repositories indexed before their dimension was recorded hold vectors of the old column's size.
        op.execute(
            text(
                "UPDATE repositories r SET dimension = :dimension WHERE dimension IS NULL "
                "AND EXISTS (SELECT 1 FROM chunks c WHERE c.repository_id = r.id)"
            ).bindparams(dimension=dimension)
        )
        if dimension <= _HNSW_MAX_DIMENSION:
            op.execute(_index_sql(dimension))


def downgrade() -> None:
    bind = op.get_bind()
    dimensions = [row[0] for row in bind.execute(text("SELECT DISTINCT vector_dims(embedding) FROM chunks"))]
    if len(dimensions) > 1:
        raise RuntimeError(
            f"chunks hold vectors of {len(dimensions)} dimensions ({', '.join(map(str, sorted(dimensions)))}); "
            "revision 0003 keeps one: delete the repositories of all but one embedder first"
        )
    indexes = bind.execute(
        text("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' AND indexname LIKE 'chunks_embedding_hnsw_%'")
    )
    for (name,) in list(indexes):
        op.execute(f'DROP INDEX IF EXISTS "{name}"')
    op.execute("DROP STATISTICS IF EXISTS chunks_embedding_dimension")
    if dimensions:
        dimension = int(dimensions[0])
    else:
        from actors.embedders import configured_dimension
        from models.settings import get_settings

        dimension = configured_dimension(get_settings())
    op.execute(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({dimension})")
    op.execute(f"DELETE FROM embedding_cache WHERE vector_dims(embedding) <> {dimension}")
    op.execute(f"ALTER TABLE embedding_cache ALTER COLUMN embedding TYPE vector({dimension})")
    op.execute("CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
