"""Hybrid code search: pgvector cosine neighbours and PostgreSQL full text, fused by reciprocal rank.

Both retrievers apply the filters (repository, language, path prefix) inside their own scan, so a
filtered search returns ``limit`` results whenever that many chunks match the filters: the HNSW scan
runs with pgvector's iterative scans, the text scan is an ordinary ``WHERE`` over the GIN index.

The text query is built from the user's words and the parts of any identifiers among them
(``getUserName`` → ``getUserName | get | user | name``), OR-combined: ``plainto_tsquery`` ANDs every
word, which finds nothing for most natural-language questions. ``ts_rank`` then prefers chunks that
match more of the words, and matches in the chunk header (path, symbol) weigh more than in its body.
Identifiers in the query (``REQUESTS_CA_BUNDLE``, ```copyPipedHeaders```) also make a second query that
matches them whole (a snake_case name as a phrase of its parts): a chunk that holds the exact name
gains :attr:`Ranking.identifier_bonus` on top of its word score.

Hits keep to the roles of ``Filters.roles`` (implementation, tests, docs; :mod:`models.roles`), and
hits of one file whose line ranges overlap (windows of one long function) are collapsed into one.
Implementation hits with fewer than :attr:`Ranking.short_lines` code lines and at least as many
comment, docstring or import lines lose half their score (:func:`demote_short`): a getter under a
long doc comment, or a module's import header, matches a question's words without being the code
that does what the question asks. A window of a definition too long for one chunk is judged by the
whole definition (:func:`definition_texts`), and equal scores go to the hit with more code.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models.vector_index import dimension_predicate, vector_expression

SearchMode = Literal["hybrid", "vector", "text"]
TieBreak = Literal["code", "rank", "share", "vector", "text"]
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
#: Rows fetched per result wanted when overlapping hits are collapsed (some merge into others).
COLLAPSE_FACTOR = 3
#: Fusion weights of the two retrievers: equal weights were best on bench/retrieval.py (0.5..1.5 tried).
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
#: Upper bound of the terms put in one text query: a pasted page of code must not become a
#: thousand-way OR.
MAX_TERMS = 48

#: Words in any script: Cyrillic or CJK query words must reach full-text search too (``\\w`` is Unicode).
_WORD = re.compile(r"\w+")
#: An identifier a developer typed on purpose: snake_case, camelCase, or in backticks.
_IDENTIFIER = re.compile(r"^(?:\w*_\w+|[A-Za-z]*[a-z][A-Z]\w*|[A-Z][A-Z0-9]+[a-z]\w*)$")
_BACKTICKED = re.compile(r"`([^`\s]+)`")
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


def query_identifiers(query: str) -> list[str]:
    """Identifiers in ``query``: backticked terms and words shaped like code names, each once.

    Only word characters survive (a backticked ``a.b`` gives ``a`` and ``b``), so each is a safe
    ``to_tsquery`` operand; PostgreSQL turns ``a_b`` into the phrase ``a <-> b``.
    """
    found: list[str] = []
    for quoted in _BACKTICKED.findall(query):
        found.extend(word.strip("_") for word in _WORD.findall(quoted))
    found.extend(word.strip("_") for word in _WORD.findall(query) if _IDENTIFIER.match(word))
    return list(dict.fromkeys(word for word in found if word))[:MAX_TERMS]


@dataclass(frozen=True, slots=True)
class Filters:
    """Search scope; ``None`` means unrestricted. ``repository_ids`` may hold several same-named repositories."""

    repository_ids: list[uuid.UUID] | None = None
    language: str | None = None
    path_prefix: str | None = None
    roles: tuple[str, ...] | None = None  # file roles (models.roles); None: every role


@dataclass(frozen=True, slots=True)
class Ranking:
    """How candidates are scored and fused; the defaults are what bench/retrieval_dev.py measured best."""

    rrf_k: float = RRF_K
    vector_weight: float = VECTOR_WEIGHT
    text_weight: float = TEXT_WEIGHT
    #: ``ts_rank`` weights of the D, C, B, A labels (A: header; B: text; see migration 0003).
    label_weights: tuple[float, float, float, float] = (0.1, 0.2, 0.4, 1.0)
    #: ``ts_rank`` normalisation flags: 1 divides by 1 + log(length), so long chunks do not win by size.
    normalization: int = 1
    #: Added, times the identifier query's ``ts_rank``, to a chunk holding a query identifier whole.
    identifier_bonus: float = 2.0
    #: Query terms in more than this share of chunks do not select candidates (see :func:`weigh_terms`).
    common_cutoff: float = 1.0
    #: Terms in fewer than this share of chunks are "rare"; a chunk matching them gains ``rare_bonus`` x ts_rank.
    rare_cutoff: float = 0.01
    rare_bonus: float = 0.0
    #: Merge hits of one file whose line ranges overlap into one hit.
    collapse: bool = True
    #: Hits with fewer than this many code lines (an import block, a getter under its doc comment, a
    #: list of fields) keep only ``short_factor`` of their score (see :func:`demote_short`); 0: off.
    short_lines: int = 8
    short_factor: float = 0.5
    #: Count only code lines (not blank, comment or docstring) against ``short_lines``; False: all lines.
    short_code_only: bool = True
    #: Only hits with at least this many comment lines per code line count as short (0: any) ...
    short_comment_ratio: float = 1.0
    #: ... except those with fewer code lines than this (a one-line declaration), which always do.
    short_always_below: int = 0
    #: Judge a window of a long definition by the whole definition (its overlapping windows joined): a
    #: window that starts inside a docstring cannot tell prose from code, and a window of a long
    #: function is not a short definition (see :func:`definition_texts`).
    short_whole_definition: bool = True
    #: Count import lines (``import``, ``from … import``, ``package``, ``use``, ``require``) with the
    #: comments, not as code: they name what a file uses, they do not do it.
    short_imports: bool = True
    #: Order of hits with equal scores (see :func:`demote_short`): "code" (more code lines first),
    #: "rank" (the better of the two ranks, then storage order), "share" (larger share of code among
    #: code and comment lines first), "vector" or "text" (that retriever's rank first).
    tie_break: TieBreak = "code"


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
    role: str = "code"


# One filter clause shared by both retrievers. ``f`` is the chunk's file (only joined for the prefix).
_FILTERS = (
    " (CAST(:repository_ids AS uuid[]) IS NULL OR c.repository_id = ANY(:repository_ids))"
    " AND (CAST(:language AS text) IS NULL OR c.language = :language)"
    " AND (CAST(:prefix AS text) IS NULL OR starts_with(f.path, :prefix))"
    " AND (CAST(:roles AS text[]) IS NULL OR f.role = ANY(:roles))"
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

# --- text candidates: words OR-ed, plus whole identifiers, scored by ts_rank -----------------------
_TEXT_CANDIDATES = (
    "text_query AS (SELECT to_tsquery('english', :tsquery) AS q, to_tsquery('english', :identifiers) AS qi,"
    " to_tsquery('english', :rare) AS qr),"
    " text_hits AS MATERIALIZED ("
    " SELECT c.id, ts_rank(CAST(:label_weights AS float4[]), c.search_vector, t.q, :normalization)"
    " + CASE WHEN CAST(:identifier_bonus AS float4) > 0 AND c.search_vector @@ t.qi"
    " THEN :identifier_bonus * ts_rank(CAST(:label_weights AS float4[]), c.search_vector, t.qi, :normalization)"
    " ELSE 0 END"
    " + CASE WHEN CAST(:rare_bonus AS float4) > 0 AND c.search_vector @@ t.qr"
    " THEN :rare_bonus * ts_rank(CAST(:label_weights AS float4[]), c.search_vector, t.qr, :normalization)"
    " ELSE 0 END AS relevance"
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
    " f.role, {score} AS score"
    " FROM vector_ranked v FULL OUTER JOIN text_ranked t ON t.id = v.id"
    " JOIN chunks c ON c.id = COALESCE(v.id, t.id)"
    " JOIN files f ON f.id = c.file_id JOIN repositories r ON r.id = c.repository_id"
    " ORDER BY score DESC, LEAST(v.rank, t.rank), c.id LIMIT :fetch"
)


#: Share of chunks holding each query term's lexemes, from PostgreSQL's own statistics of the
#: column (``pg_stats.most_common_elems``, kept by ANALYZE/autovacuum): a term missing from the list
#: is rarer than every listed one. No statistics yet (a new index) means every term counts as rare.
_TERM_FREQUENCIES = (
    "SELECT q.term, max(s.freq) AS freq, count(l.lexeme) AS lexemes"
    " FROM unnest(CAST(:terms AS text[])) AS q(term)"
    " LEFT JOIN LATERAL unnest(to_tsvector('english', q.term)) AS l ON true"
    " LEFT JOIN (SELECT m.elem, m.freq FROM pg_stats p,"
    " unnest(CAST(CAST(p.most_common_elems AS text) AS text[]), p.most_common_elem_freqs) AS m(elem, freq)"
    " WHERE p.tablename = 'chunks' AND p.attname = 'search_vector') s ON s.elem = l.lexeme"
    " GROUP BY q.term"
)


async def weigh_terms(conn: AsyncConnection, terms: Sequence[str], ranking: Ranking) -> tuple[list[str], list[str]]:
    """(``terms`` that select candidates, the rare ones among them) by how common each is in the index.

    A BM25-like correction where ``ts_rank`` has none: ``ts_rank`` counts "get" in a question as much
    as "redirect", though nearly every chunk holds "get". Terms in more than ``common_cutoff`` of
    the chunks only add noise to an OR query and are dropped (unless nothing else is left); terms
    below ``rare_cutoff`` (or too rare to be listed) earn ``rare_bonus``.
    """
    if not terms or (ranking.common_cutoff >= 1.0 and ranking.rare_bonus <= 0):
        return list(terms), []
    rows = await conn.execute(text(_TERM_FREQUENCIES), {"terms": list(terms)})
    frequency = {row.term: (row.freq, row.lexemes) for row in rows}
    kept = [t for t in terms if (frequency.get(t, (None, 1))[0] or 0.0) <= ranking.common_cutoff]
    rare = [
        t
        for t in kept
        if frequency.get(t, (None, 0))[1] and (frequency.get(t, (None, 0))[0] or 0.0) < ranking.rare_cutoff
    ]
    return (kept or list(terms)), rare


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
    ranking: Ranking | None = None,
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
    ranking = ranking or Ranking()
    depth = candidate_depth(limit) if mode == "hybrid" else limit * (COLLAPSE_FACTOR if ranking.collapse else 1)
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
    rare: list[str] = []
    if mode != "vector":
        terms, rare = await weigh_terms(conn, terms, ranking)
    params: dict[str, object] = {
        **vector_params,
        "tsquery": tsquery_source(terms),
        "rare": tsquery_source(rare),
        "rare_bonus": ranking.rare_bonus,
        "identifiers": tsquery_source(query_identifiers(query)),
        "repository_ids": filters.repository_ids,
        "language": filters.language,
        "prefix": filters.path_prefix,
        "roles": list(filters.roles) if filters.roles is not None else None,
        "depth": depth,
        # Collapsing merges some hits into others: fetch more, so ``limit`` remain.
        "fetch": limit * COLLAPSE_FACTOR if ranking.collapse else limit,
        "rrf_k": float(ranking.rrf_k),
        "vector_weight": ranking.vector_weight,
        "text_weight": ranking.text_weight,
        "label_weights": list(ranking.label_weights),
        "normalization": ranking.normalization,
        "identifier_bonus": ranking.identifier_bonus,
    }
    rows = await conn.execute(text(_statement(mode, bool(terms), vector_part)), params)
    hits = [
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
            role=row.role,
        )
        for row in rows
    ]
    definitions = (
        await definition_texts(conn, hits) if ranking.short_lines > 0 and ranking.short_whole_definition else {}
    )
    hits = demote_short(hits, ranking, definitions)
    return (collapse_overlapping(hits) if ranking.collapse else hits)[:limit]


#: Every other chunk of each hit's file with the hit's symbol: the windows a long definition was cut into.
_SIBLINGS = (
    "SELECT h.id AS hit, o.start_line, o.end_line, o.content FROM chunks h"
    " JOIN chunks o ON o.file_id = h.file_id AND o.symbol = h.symbol AND o.id <> h.id"
    " WHERE h.id = ANY(:ids)"
)


async def definition_texts(conn: AsyncConnection, hits: Sequence[Hit]) -> dict[int, str]:
    """Chunk id → text of the whole definition, for the hits that are one window of a longer one.

    A definition larger than a chunk is cut into overlapping line windows that keep its symbol; the
    windows of one hit's file with its symbol that overlap it, and those that overlap them, are the
    definition. (Two definitions of one name, such as a getter and its setter, do not overlap.) Code
    between definitions (no symbol: imports, constants) is no definition, and its windows are judged
    one by one: joined, requests' import header and its constants made one long "definition" that
    escaped the prior. One query for all hits, on the ``(file_id, ordinal)`` index; hits with no
    such window are left out.
    """
    wanted = [
        hit.chunk_id
        for hit in hits
        if hit.symbol is not None and hit.role == "code" and hit.language not in _PROSE_LANGUAGES
    ]
    if not wanted:
        return {}
    siblings: dict[int, list[tuple[int, int, str]]] = {}
    for row in await conn.execute(text(_SIBLINGS), {"ids": wanted}):
        siblings.setdefault(row.hit, []).append((row.start_line, row.end_line, row.content))
    texts: dict[int, str] = {}
    for hit in hits:
        members = overlapping_chain((hit.start_line, hit.end_line, hit.content), siblings.get(hit.chunk_id, []))
        if len(members) > 1:
            texts[hit.chunk_id] = _join_lines(members)
    return texts


def overlapping_chain(
    first: tuple[int, int, str], others: Sequence[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    """``first`` and the line ranges ``(start, end, text)`` among ``others`` linked to it by overlaps."""
    members = [first]
    start, end = first[0], first[1]
    grown = True
    while grown:
        grown = False
        for other in others:
            if other not in members and other[0] <= end and other[1] >= start:
                members.append(other)
                start, end = min(start, other[0]), max(end, other[1])
                grown = True
    return members


#: Languages whose lines are prose: comment markers mean nothing there (``#`` is a Markdown heading).
_PROSE_LANGUAGES = frozenset({"markdown", "rst", "text"})
_COMMENT_LINE = re.compile(r"^(?:#|//|/\*|\*|<!--)")
_DOCSTRING_QUOTES = re.compile(r'^[rRbBuU]?("""|\'\'\')')
#: A line that imports: Python, Go (``package``, ``import (``), JavaScript/TypeScript (``import``,
#: ``export … from``, ``require``), Rust and PHP (``use``), Java. C's ``#include`` is a ``#`` line already.
_IMPORT_LINE = re.compile(
    r"^(?:import\b|from\s+[\w.]+\s+import\b|package\s+[\w.]+;?$|use\s+[\w:\\]"
    r"|export\s+(?:\*|\{[^}]*\}|type\s+\{[^}]*\})\s*(?:as\s+\w+\s+)?from\b"
    r"|(?:const|let|var)\s+[\w{},\s]+=\s*require\()"
)
_BRACKETS = {"(": ")", "{": "}"}


def _unclosed(line: str) -> str | None:
    """The bracket an import line leaves open (``from x import (``, ``import {``), if any."""
    for opening, closing in _BRACKETS.items():
        if line.count(opening) > line.count(closing):
            return closing
    return None


def line_kinds(content: str, *, imports: bool = False) -> tuple[int, int]:
    """(code lines, comment lines) of ``content``: block comments and docstrings count as comment, blanks as neither.

    With ``imports``, import statements (over all their lines) count as comment too.
    """
    code = comment = 0
    closing: str | None = None  # the end marker of the block comment or docstring we are inside
    importing: str | None = None  # the bracket that ends the multi-line import we are inside
    for raw in content.split("\n"):
        line = raw.strip()
        if closing is not None:
            comment += 1
            if closing in line:
                closing = None
            continue
        if not line:
            continue
        if importing is not None:
            comment += 1
            if importing in line:
                importing = None
            continue
        if imports and _IMPORT_LINE.match(line):
            comment += 1
            importing = _unclosed(line)
            continue
        quotes = _DOCSTRING_QUOTES.match(line)
        if quotes:
            comment += 1
            if quotes.group(1) not in line[quotes.end() :]:
                closing = quotes.group(1)
            continue
        if line.startswith("/*") and "*/" not in line[2:]:
            comment += 1
            closing = "*/"
            continue
        if _COMMENT_LINE.match(line):
            comment += 1
            continue
        code += 1
    return code, comment


def code_lines(content: str) -> int:
    """Lines of ``content`` that are code: not blank, not a comment, not inside a block comment or docstring."""
    return line_kinds(content)[0]


def demote_short(hits: Sequence[Hit], ranking: Ranking, definitions: Mapping[int, str] | None = None) -> list[Hit]:
    """``hits`` re-ordered after scaling the score of those with little code by ``short_factor``.

    A chunk with a few code lines under a long comment (a getter under its JSDoc, a struct's fields
    with theirs, a module's imports and constants) holds the words of a question densely in its
    comments and wins on word overlap and on embedding similarity, while a question that asks where
    or how something is done wants the code that does it. On the dev set these were most of the
    wrong first hits of keyword questions (docs/benchmarks.md). Works on the rows already fetched:
    no query is added. Only implementation is scaled: a test is short by nature and its title is
    the question (tests lost MRR when they were scaled too), and prose has no comments. Short code
    without comments is left alone (``short_comment_ratio``): scaling every short hit did better
    on the dev set but cost the stdlib set, whose answers are short functions, 8 points of MRR.
    ``definitions`` (chunk id → text, :func:`definition_texts`) puts the whole definition in place of
    a hit that is one window of it; import lines count as comment under ``short_imports``.

    Equal scores are common at the top of a fusion of ranks (first by one retriever and second by
    the other, or the reverse, sum to the same score); ``tie_break`` "code" then puts the hit with
    more code lines first, the one more likely to do what was asked, where the order used to be
    that of storage.
    """
    definitions = definitions or {}
    if (ranking.short_lines <= 0 or ranking.short_factor == 1.0) and ranking.tie_break == "rank":
        return list(hits)

    def adjusted(hit: Hit) -> float:
        if ranking.short_lines <= 0 or hit.role != "code" or hit.language in _PROSE_LANGUAGES:
            return hit.score
        whole = definitions.get(hit.chunk_id)
        code, comment = line_kinds(whole if whole is not None else hit.content, imports=ranking.short_imports)
        length = code if ranking.short_code_only else (whole or hit.content).count("\n") + 1
        if length >= ranking.short_lines:
            return hit.score
        if code >= ranking.short_always_below and comment < ranking.short_comment_ratio * max(code, 1):
            return hit.score
        # Scaled toward zero by its magnitude, so that a negative score (vector mode: 1 - cosine distance) drops too.
        return hit.score - (1.0 - ranking.short_factor) * abs(hit.score)

    def tie(hit: Hit) -> float:
        if ranking.tie_break == "rank":
            return 0.0
        if ranking.tie_break in ("vector", "text"):
            rank = hit.vector_rank if ranking.tie_break == "vector" else hit.text_rank
            return float(rank if rank is not None else 10**6)
        code, comment = line_kinds(hit.content, imports=ranking.short_imports)
        if ranking.tie_break == "code":
            return -float(code)
        return -code / max(1, code + comment)

    scored = sorted(
        ((adjusted(hit), tie(hit), position, hit) for position, hit in enumerate(hits)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    return [replace(hit, score=score) for score, _, _, hit in scored]


def collapse_overlapping(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` (best first) with each group of one file's overlapping line ranges merged into one.

    The merged hit takes the best member's place, score and ranks, the union of the line ranges,
    and the text of those lines (members are exact line ranges of one file, so their texts join).
    Windows of one long function become one hit instead of several results an agent would read as
    different answers; neighbours that only touch stay apart (they are different definitions).
    """
    groups: list[list[Hit]] = []
    for hit in hits:
        touching = [
            group
            for group in groups
            if group[0].repository_path == hit.repository_path
            and group[0].file_path == hit.file_path
            and hit.start_line <= max(member.end_line for member in group)
            and hit.end_line >= min(member.start_line for member in group)
        ]
        if not touching:
            groups.append([hit])
            continue
        # A window between two earlier hits joins them both: the first (best) group takes the rest.
        first = touching[0]
        first.append(hit)
        for other in touching[1:]:
            first.extend(other)
            groups.remove(other)
    return [_merge(group) for group in groups]


def _join_lines(members: Sequence[tuple[int, int, str]]) -> str:
    """One text of exact line ranges ``(start, end, text)`` of one file (overlapping or apart)."""
    lines: dict[int, str] = {}
    for start, _, content in members:
        for offset, line in enumerate(content.split("\n")):
            lines.setdefault(start + offset, line)
    return "\n".join(lines.get(number, "") for number in range(min(lines), max(lines) + 1))


def _merge(group: list[Hit]) -> Hit:
    best = group[0]
    if len(group) == 1:
        return best
    start = min(member.start_line for member in group)
    end = max(member.end_line for member in group)
    body = _join_lines([(member.start_line, member.end_line, member.content) for member in group])
    symbols = list(dict.fromkeys(member.symbol for member in group if member.symbol))
    return Hit(
        chunk_id=best.chunk_id,
        repository=best.repository,
        repository_path=best.repository_path,
        file_path=best.file_path,
        start_line=start,
        end_line=end,
        language=best.language,
        symbol=", ".join(symbols) if symbols else None,
        content=body,
        score=best.score,
        vector_rank=best.vector_rank,
        text_rank=best.text_rank,
        role=best.role,
    )
