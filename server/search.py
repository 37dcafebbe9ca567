"""Hybrid code search: pgvector cosine neighbours and PostgreSQL full text, fused by reciprocal rank.

Both retrievers apply the filters (repository, language, path prefix) inside their own scan, so a
filtered search returns ``limit`` results whenever that many chunks match the filters: the HNSW scan
runs with pgvector's iterative scans, the text scan is an ordinary ``WHERE`` over the GIN index.

The text query is built from the user's words and the parts of any identifiers among them
(``getUserName`` → ``getUserName | get | user | name``), OR-combined: ``plainto_tsquery`` ANDs every
word, which finds nothing for most natural-language questions. ``ts_rank`` then prefers chunks that
match more of the words, and matches in the chunk header (path, symbol) weigh more than in its body.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models.vector_index import dimension_predicate, vector_expression

SearchMode = Literal["hybrid", "vector", "text"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "text")

#: Reciprocal-rank-fusion constant: score = Σ 1 / (RRF_K + rank). The RRF paper's 60 flattens the
#: ranks; with two retrievers whose first hits are right about a third of the time, a smaller
#: constant that trusts the top ranks more did better on bench/retrieval.py (recall@10 0.7375 at 60,
#: 0.75 at 20, 0.765 at 5; see docs/benchmarks.md).
RRF_K = 10
#: Candidates each retriever contributes to the fusion, as a multiple of ``limit`` (at least
#: ``MIN_CANDIDATES``): a chunk ranked 30th by one method and 3rd by the other must be seen by both.
CANDIDATE_FACTOR = 5
MIN_CANDIDATES = 50
#: Fusion weights of the two retrievers: equal weights were best on bench/retrieval.py (0.5..1.5 tried).
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
#: Upper bound of the terms put in one text query: a pasted page of code must not become a
#: thousand-way OR.
MAX_TERMS = 48

_WORD = re.compile(r"[A-Za-z0-9_]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def identifier_parts(word: str) -> list[str]:
    """The parts of an identifier: ``getUserName`` → get, User, Name; ``HTTP_server2`` → HTTP, server, 2."""
    return [part for piece in word.split("_") for part in _CAMEL.findall(piece)]


def text_query_terms(query: str) -> list[str]:
    """Distinct search terms of ``query``: each word, then its identifier parts (case-insensitive).

    Only letters, digits and underscores survive, so the terms are safe inside ``to_tsquery``
    syntax; the query string is still passed as a bound parameter.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(query):
        for term in (word.strip("_"), *identifier_parts(word)):
            key = term.lower()
            if key and key not in seen:
                seen.add(key)
                terms.append(term)
    return terms[:MAX_TERMS]


def tsquery_source(terms: Sequence[str]) -> str:
    """``to_tsquery`` input OR-ing ``terms``; stop words are dropped by PostgreSQL itself."""
    return " | ".join(terms)


@dataclass(frozen=True, slots=True)
class Filters:
    """Search scope; ``None`` means unrestricted. ``repository_ids`` may hold several same-named repositories."""

    repository_ids: list[uuid.UUID] | None = None
    language: str | None = None
    path_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    repository: str
    repository_path: str
    file_path: str
    start_line: int
    end_line: int
    language: str
    symbol: str | None
    content: str
    score: float
    vector_rank: int | None
    text_rank: int | None


# One filter clause shared by both retrievers. ``f`` is the chunk's file (only joined for the prefix).
_FILTERS = (
    " (CAST(:repository_ids AS uuid[]) IS NULL OR c.repository_id = ANY(:repository_ids))"
    " AND (CAST(:language AS text) IS NULL OR c.language = :language)"
    " AND (CAST(:prefix AS text) IS NULL OR starts_with(f.path, :prefix))"
)

# --- vector candidates ------------------------------------------------------------------------------
# One query embedding per embedder in scope (repositories keep their own model and dimension). Each
# group walks only the HNSW index of its dimension: the expression and the predicate repeat the
# partial index's (models/vector_index.py). Groups hold disjoint repositories, so their ranked lists
# are united into one ``vector_ranked``, each chunk ranked within its own model's list.


@dataclass(frozen=True, slots=True)
class VectorQuery:
    """The query embedded by one model, for the repositories indexed with it (``None``: all in scope)."""

    vector: Sequence[float]
    repository_ids: list[uuid.UUID] | None = None

    @property
    def dimension(self) -> int:
        return len(self.vector)


_EMPTY_VECTOR = "vector_ranked AS (SELECT NULL::bigint AS id, NULL::float8 AS distance, NULL::bigint AS rank LIMIT 0)"


def _vector_candidates(groups: Sequence[VectorQuery]) -> tuple[str, dict[str, object]]:
    """The ``vector_hits_<i>`` CTEs and ``vector_ranked``, with their parameters."""
    if not groups:
        return _EMPTY_VECTOR, {}
    parts: list[str] = []
    ranked: list[str] = []
    params: dict[str, object] = {}
    for number, group in enumerate(groups):
        dimension = group.dimension
        embedding = vector_expression(dimension, "c.embedding")
        repositories = ""
        if group.repository_ids is not None:
            repositories = f" AND c.repository_id = ANY(:vector_repositories_{number})"
            params[f"vector_repositories_{number}"] = group.repository_ids
        params[f"vector_{number}"] = list(group.vector)
        parts.append(
            f"vector_hits_{number} AS MATERIALIZED ("
            f" SELECT c.id, {embedding} <=> CAST(:vector_{number} AS vector({dimension})) AS distance"
            " FROM chunks c JOIN files f ON f.id = c.file_id"
            f" WHERE {dimension_predicate(dimension, 'c.embedding')}{repositories} AND {_FILTERS}"
            " ORDER BY distance LIMIT :depth)"
        )
        # ``+ 0``: with relaxed_order the scan's output is only nearly sorted; re-sort outside (pgvector docs).
        ranked.append(
            f"SELECT id, distance, row_number() OVER (ORDER BY distance + 0, id) AS rank FROM vector_hits_{number}"
        )
    parts.append("vector_ranked AS (" + " UNION ALL ".join(ranked) + ")")
    return ", ".join(parts), params


# --- text candidates and fusion ----------------------------------------------------------------------

_TEXT_CANDIDATES = (
    "text_query AS (SELECT to_tsquery('english', :tsquery) AS q),"
    " text_hits AS MATERIALIZED ("
    " SELECT c.id, ts_rank(c.search_vector, t.q, 1) AS relevance"
    " FROM text_query t, chunks c JOIN files f ON f.id = c.file_id"
    f" WHERE c.search_vector @@ t.q AND {_FILTERS}"
    " ORDER BY relevance DESC, c.id LIMIT :depth),"
    " text_ranked AS (SELECT id, relevance, row_number() OVER (ORDER BY relevance DESC, id) AS rank FROM text_hits)"
)

_EMPTY_TEXT = "text_ranked AS (SELECT NULL::bigint AS id, NULL::float4 AS relevance, NULL::bigint AS rank LIMIT 0)"

_SCORES: dict[SearchMode, str] = {
    "hybrid": (
        "COALESCE(CAST(:vector_weight AS float8) / (CAST(:rrf_k AS float8) + v.rank), 0)"
        " + COALESCE(CAST(:text_weight AS float8) / (CAST(:rrf_k AS float8) + t.rank), 0)"
    ),
    "vector": "1.0 - v.distance",
    "text": "t.relevance",
}

_FUSE = (
    " SELECT c.id AS chunk_id, r.name AS repository, r.path AS repository_path, f.path AS file_path,"
    " c.start_line, c.end_line, c.language, c.symbol, c.content, v.rank AS vector_rank, t.rank AS text_rank,"
    " {score} AS score"
    " FROM vector_ranked v FULL OUTER JOIN text_ranked t ON t.id = v.id"
    " JOIN chunks c ON c.id = COALESCE(v.id, t.id)"
    " JOIN files f ON f.id = c.file_id JOIN repositories r ON r.id = c.repository_id"
    " ORDER BY score DESC, LEAST(v.rank, t.rank), c.id LIMIT :limit"
)


def _statement(mode: SearchMode, has_terms: bool, vector_part: str) -> str:
    text_part = _TEXT_CANDIDATES if mode in ("hybrid", "text") and has_terms else _EMPTY_TEXT
    return f"WITH {vector_part}, {text_part}" + _FUSE.format(score=_SCORES[mode])


def candidate_depth(limit: int) -> int:
    return max(MIN_CANDIDATES, CANDIDATE_FACTOR * limit)


async def run_search(
    conn: AsyncConnection,
    *,
    query: str,
    vector: Sequence[float] | None = None,
    filters: Filters,
    limit: int,
    mode: SearchMode = "hybrid",
    vectors: Sequence[VectorQuery] = (),
) -> list[Hit]:
    """The ``limit`` best chunks for ``query`` under ``filters``, best first.

    ``vectors`` are the query's embeddings, one per embedder in scope; ``vector`` is shorthand for
    one embedding used over every repository in scope. Mode ``"vector"`` needs at least one; in
    ``"hybrid"`` the repositories without one are found by their words only. Runs inside the
    caller's transaction: the pgvector settings are ``SET LOCAL``.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}")
    groups = list(vectors) if vector is None else [VectorQuery(vector), *vectors]
    if mode == "vector" and not groups:
        raise ValueError(f"mode {mode!r} needs the query's embedding")
    vector_part, vector_params = _vector_candidates(groups if mode != "text" else [])
    depth = candidate_depth(limit) if mode == "hybrid" else limit
    terms = text_query_terms(query)
    # Iterative scans keep reading the HNSW graph until ``depth`` rows pass the filters; ef_search
    # bounds the rows a single (non-iterative) pass can return. Custom plans: asyncpg prepares the
    # statement, and after five runs PostgreSQL may switch to a generic plan, which cannot see which
    # filters are NULL nor use the HNSW index for this vector, and reads every chunk (50 ms instead
    # of 2 at 10k chunks). All three settings are local to the caller's transaction.
    await conn.execute(
        text(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            "set_config('hnsw.ef_search', :ef, true), set_config('plan_cache_mode', 'force_custom_plan', true)"
        ),
        {"ef": str(max(40, depth))},
    )
    params: dict[str, object] = {
        **vector_params,
        "tsquery": tsquery_source(terms),
        "repository_ids": filters.repository_ids,
        "language": filters.language,
        "prefix": filters.path_prefix,
        "depth": depth,
        "limit": limit,
        "rrf_k": float(RRF_K),
        "vector_weight": VECTOR_WEIGHT,
        "text_weight": TEXT_WEIGHT,
    }
    rows = await conn.execute(text(_statement(mode, bool(terms), vector_part)), params)
    return [
        Hit(
            chunk_id=row.chunk_id,
            repository=row.repository,
            repository_path=row.repository_path,
            file_path=row.file_path,
            start_line=row.start_line,
            end_line=row.end_line,
            language=row.language,
            symbol=row.symbol,
            content=row.content,
            score=float(row.score),
            vector_rank=row.vector_rank,
            text_rank=row.text_rank,
        )
        for row in rows
    ]
