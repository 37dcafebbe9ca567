"""One HNSW index per embedding dimension over the untyped ``chunks.embedding`` (see migration 0004).

Writers and searchers agree on two pieces of SQL, :func:`vector_expression` and
:func:`dimension_predicate`: the planner uses a partial expression index only when the query
repeats its expression and predicate literally, so both are built here and nowhere else.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

logger = logging.getLogger(__name__)

#: pgvector's HNSW limit for ``vector`` columns; a larger dimension is searched by an exact scan.
HNSW_MAX_DIMENSION = 2000
#: pgvector's limit for any ``vector`` value.
MAX_DIMENSION = 16000
#: Same key in every process: concurrent starters of one new dimension create its index once.
_INDEX_LOCK_KEY = 0x0C0DEB1D


def _checked(dimension: int) -> int:
    # The dimension is put into SQL text (a typmod cannot be a bound parameter): only a plain int.
    if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= MAX_DIMENSION:
        raise ValueError(f"embedding dimension {dimension!r} is outside 1..{MAX_DIMENSION}")
    return dimension


def index_name(dimension: int) -> str:
    return f"chunks_embedding_hnsw_{_checked(dimension)}"


def vector_expression(dimension: int, column: str = "embedding") -> str:
    """The indexed expression: the untyped column cast to the dimension's type."""
    return f"({column}::vector({_checked(dimension)}))"


def dimension_predicate(dimension: int, column: str = "embedding") -> str:
    """The partial index's predicate; also keeps the cast above from seeing a vector of another size."""
    return f"vector_dims({column}) = {_checked(dimension)}"


def create_index_sql(dimension: int) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(dimension)} ON chunks USING hnsw "
        f"({vector_expression(dimension)} vector_cosine_ops) WHERE {dimension_predicate(dimension)}"
    )


async def ensure_vector_index(conn: AsyncConnection, dimension: int) -> bool:
    """Create the dimension's index unless it exists; True when this call created it.

    Runs in the caller's transaction (it takes a transaction-level advisory lock). Building on a
    table without vectors of that size only scans it, so a new embedder costs one pass, once.
    """
    if _checked(dimension) > HNSW_MAX_DIMENSION:
        logger.warning(
            "embedding dimension %d is above pgvector's HNSW limit (%d): searches over it scan exactly",
            dimension,
            HNSW_MAX_DIMENSION,
        )
        return False
    exists = await conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": index_name(dimension)})
    if exists:
        return False
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INDEX_LOCK_KEY})
    if await conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": index_name(dimension)}):
        return False
    await conn.execute(text(create_index_sql(dimension)))
    logger.info("created the HNSW index for %d-dimensional embeddings (%s)", dimension, index_name(dimension))
    return True
