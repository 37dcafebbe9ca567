"""Retrieval on real repositories: the development set of ``../shared/retrieval-dev`` (60 questions).

    python -m bench.retrieval_dev [--corpus /work/corpus] [--variants all]

Indexes psf/requests, spf13/cobra and sindresorhus/got (extracted with the set's ``checkout.sh``
into ``CORPUS/{requests,cobra,got}``) through the real pipeline (RabbitMQ, ``dramatiq`` worker
processes, embedded PostgreSQL, the default local model), then asks every question of the set in
each ranking variant of ``server.search`` and of two baselines computed here over the same trees:

- ``bm25``: plain Okapi BM25 (k1 1.2, b 0.75) over the pipeline's own tree-sitter chunks (the same
  ``read_and_chunk``), words and their identifier parts as terms, no field weights;
- ``ripgrep``: ``rg`` for each query word (stop words and words under 3 letters dropped), files ranked
  by their number of matches, each file reported as its line with the most distinct query words.

Every variant's results go through the set's own ``score.py`` (span- and file-level recall@1/10 and
MRR@10, per repository, per kind). Vectors computed in earlier runs are kept in an embedding-cache
dump (``--cache``) and loaded into the fresh database, so a re-run embeds only chunks that changed.

The whole checkout is indexed, tests and docs included, as the set asks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stack import ROOT, bench_environment, spawn_workers, stop_workers
from models.roles import Scope, roles_for
from models.settings import Settings
from server.search import SearchMode

REPOS = {"psf/requests": "requests", "spf13/cobra": "cobra", "sindresorhus/got": "got"}
DEV_SET = Path("/work/shared/retrieval-dev")
TOP_K = 10
DEFAULT_CACHE = Path.home() / ".cache" / "codebase-mcp" / "bench-embedding-cache.copy"
#: Words a grep user would not type; BM25 needs no list (its IDF weighs them down).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "does",
        "for",
        "from",
        "how",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "with",
        "without",
        "do",
        "done",
        "get",
        "gets",
        "set",
        "sets",
    ]
)
_WORD = re.compile(r"[A-Za-z0-9_]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


@dataclass(frozen=True, slots=True)
class Question:
    repo: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Located:
    path: str
    start_line: int
    end_line: int


@dataclass
class Variant:
    """One way of answering: a name, what it returns per question, and its latencies."""

    name: str
    answer: Callable[[Question], Any]  # returns list[Located] (sync baselines) or an awaitable of it
    latencies: list[float] = field(default_factory=list)
    #: Per question, the service's hits with what ranked them (symbol, score, vector and text rank).
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def load_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            questions.append(Question(record["repo"], record["kind"], record["query"]))
    return questions


def copy_tree(source: Path, destination: Path) -> list[str]:
    """Copy the checkout, leaving out files the index cannot hold yet; returns what was left out.

    A file with a NUL byte anywhere (``media/logo.ai`` in got) or a name that is not UTF-8 fails the
    whole job on this branch (issue 16, fixed elsewhere): such files are never targets.
    """
    left_out: list[str] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or path.is_symlink():
            continue
        try:
            str(relative).encode("utf-8")
        except UnicodeEncodeError:
            left_out.append(repr(str(relative)))
            continue
        data = path.read_bytes()
        if b"\x00" in data:
            left_out.append(str(relative))
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return left_out


# --- baselines -----------------------------------------------------------------------------------


def terms_of(text: str) -> list[str]:
    """Lower-cased words and their identifier parts (``getUserName`` → getusername, get, user, name)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        parts = [part for piece in word.split("_") for part in _CAMEL.findall(piece)]
        out.append(word.lower())
        out.extend(part.lower() for part in parts if len(parts) > 1)
    return out


class BM25:
    """Okapi BM25 over chunks ``(path, start, end, text)``."""

    def __init__(self, chunks: Sequence[tuple[str, int, int, str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.chunks = chunks
        self.k1, self.b = k1, b
        self.counts = [Counter(terms_of(chunk[3])) for chunk in chunks]
        self.lengths = [sum(counts.values()) for counts in self.counts]
        self.average = statistics.fmean(self.lengths) if self.lengths else 1.0
        frequency: Counter[str] = Counter()
        for counts in self.counts:
            frequency.update(counts.keys())
        total = len(chunks)
        self.idf = {term: math.log(1 + (total - n + 0.5) / (n + 0.5)) for term, n in frequency.items()}
        self.postings: dict[str, list[int]] = {}
        for index, counts in enumerate(self.counts):
            for term in counts:
                self.postings.setdefault(term, []).append(index)

    def search(self, query: str, limit: int) -> list[Located]:
        scores: dict[int, float] = {}
        for term in set(terms_of(query)):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for index in self.postings[term]:
                tf = self.counts[index][term]
                norm = self.k1 * (1 - self.b + self.b * self.lengths[index] / self.average)
                scores[index] = scores.get(index, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        best = sorted(scores, key=lambda index: (-scores[index], index))[:limit]
        return [Located(self.chunks[i][0], self.chunks[i][1], self.chunks[i][2]) for i in best]


def ripgrep_search(rg: str, root: Path, query: str, limit: int) -> list[Located]:
    words = sorted({w.lower() for w in _WORD.findall(query) if len(w) >= 3 and w.lower() not in STOP_WORDS})
    if not words:
        return []
    command = [rg, "--no-config", "--hidden", "-g", "!.git", "-n", "-o", "-i", "-w", "--no-heading"]
    for word in words:
        command += ["-e", word]
    output = subprocess.run(command, cwd=root, capture_output=True, text=True, errors="replace").stdout
    matches: Counter[str] = Counter()
    per_line: dict[tuple[str, int], set[str]] = {}
    for line in output.splitlines():
        path, _, rest = line.partition(":")
        number, _, match = rest.partition(":")
        if not number.isdigit():
            continue
        matches[path] += 1
        per_line.setdefault((path, int(number)), set()).add(match.lower())
    ranked = sorted(matches, key=lambda path: (-matches[path], path))[:limit]
    located = []
    for path in ranked:
        line_no = max((key for key in per_line if key[0] == path), key=lambda key: (len(per_line[key]), -key[1]))[1]
        located.append(Located(path, line_no, line_no))
    return located


# --- scoring -------------------------------------------------------------------------------------


def score(questions: list[Question], answers: list[list[Located]], work: Path, name: str) -> dict[str, Any]:
    """The set's own scorer on one variant's answers; returns its ``metrics`` object."""
    results = work / f"results-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.jsonl"
    with results.open("w", encoding="utf-8") as out:
        for question, located in zip(questions, answers, strict=True):
            hits = [{"path": h.path, "start_line": h.start_line, "end_line": h.end_line} for h in located]
            out.write(json.dumps({"repo": question.repo, "query": question.text, "results": hits}) + "\n")
    scored = subprocess.run(
        [sys.executable, str(DEV_SET / "score.py"), str(DEV_SET / "queries.jsonl"), str(results), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    metrics: dict[str, Any] = json.loads(scored.stdout)["metrics"]
    return metrics


def table(rows: dict[str, dict[str, Any]], group: str) -> str:
    lines = [
        f"{group}: span R@1 / R@10 / MRR | file R@1 / R@10 / MRR",
        f"{'variant':<22} {'span@1':>7} {'span@10':>7} {'spanMRR':>7} | {'file@1':>7} {'file@10':>7} {'fileMRR':>7}",
    ]
    for name, metrics in rows.items():
        found = metrics.get(group)
        if found is None:
            continue
        span, whole = found["span"], found["file"]
        lines.append(
            f"{name:<22} {span['recall@1']:7.3f} {span['recall@10']:7.3f} {span['mrr']:7.3f} |"
            f" {whole['recall@1']:7.3f} {whole['recall@10']:7.3f} {whole['mrr']:7.3f}"
        )
    return "\n".join(lines)


def write_misses(directory: Path, variant: Variant, questions: list[Question], queries: Path) -> None:
    """``misses-<variant>.txt``: each question not answered at rank 1, its targets, what ranked first and why."""
    targets = load_targets(queries)
    lines: list[str] = []
    for question in questions:
        hits = variant.details.get(question.text, [])
        wanted = targets[(question.repo, question.text)]
        located = [Located(h["path"], h["lines"][0], h["lines"][1]) for h in hits]
        rank = span_rank(located, wanted)
        if rank == 1:
            continue
        lines.append(f"[{question.repo} {question.kind}] rank {rank}: {question.text}")
        lines.extend(f"    target {path}:{start}-{end}" for path, start, end in wanted)
        for position, hit in enumerate(hits[: (rank or 3)], 1):
            lines.append(
                f"    #{position} {hit['path']}:{hit['lines'][0]}-{hit['lines'][1]} {hit['symbol']}"
                f" score {hit['score']} vector {hit['vector_rank']} text {hit['text_rank']}"
            )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.name)
    (directory / f"misses-{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the embedding cache across runs ----------------------------------------------------------------


async def load_cache(database_url: str, cache: Path) -> int:
    import asyncpg

    if not cache.exists():
        return 0
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.copy_to_table("embedding_cache", source=str(cache), format="binary")
        return int(await conn.fetchval("SELECT count(*) FROM embedding_cache"))
    finally:
        await conn.close()


async def save_cache(database_url: str, cache: Path) -> None:
    import asyncpg

    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.copy_from_table("embedding_cache", output=str(partial), format="binary")
    finally:
        await conn.close()
    partial.replace(cache)


# --- the run -------------------------------------------------------------------------------------


def service_variants(service: Any, roots: dict[str, Path], vectors: dict[str, list[float]]) -> list[Variant]:
    """The product's ranking variants: each a (mode, options) of ``server.search.run_search``."""
    from server.search import Filters, Ranking, run_search

    ids: dict[str, Any] = {}

    def make(
        mode: SearchMode, details: dict[str, list[dict[str, Any]]], scope: Scope = "code", **options: Any
    ) -> Callable[[Question], Any]:
        ranking = Ranking(**options)

        async def answer(question: Question) -> list[Located]:
            if question.repo not in ids:
                async with service.engine.connect() as conn:
                    found = await service._find_repositories(conn, str(roots[question.repo]))
                ids[question.repo] = [row.id for row in found]
            filters = Filters(repository_ids=ids[question.repo], roles=roles_for(scope, question.text))
            async with service.engine.begin() as conn:
                hits = await run_search(
                    conn,
                    query=question.text,
                    vector=vectors[question.text] if mode != "text" else None,
                    filters=filters,
                    limit=TOP_K,
                    mode=mode,
                    ranking=ranking,
                )
            details[question.text] = [
                {
                    "path": hit.file_path,
                    "lines": [hit.start_line, hit.end_line],
                    "symbol": hit.symbol,
                    "score": round(hit.score, 4),
                    "vector_rank": hit.vector_rank,
                    "text_rank": hit.text_rank,
                }
                for hit in hits
            ]
            return [Located(hit.file_path, hit.start_line, hit.end_line) for hit in hits]

        return answer

    variants = []
    for name, mode, options in ranking_variants():
        details: dict[str, list[dict[str, Any]]] = {}
        variants.append(Variant(name, make(mode, details, **options), details=details))
    return variants


def ranking_variants() -> list[tuple[str, SearchMode, dict[str, Any]]]:
    """(name, mode, run_search keyword arguments) of every variant scored; the first hybrid is the default."""
    before = {"scope": "all", "collapse": False, "short_lines": 0}  # the ranking before issue 13
    run4 = {"short_whole_definition": False, "short_imports": False, "tie_break": "rank"}  # run 4's default
    return [
        ("vector/before", "vector", before),
        ("text/before", "text", before),
        ("hybrid/before", "hybrid", before),
        ("hybrid/scope=all", "hybrid", {"scope": "all"}),
        ("hybrid/no-collapse", "hybrid", {"collapse": False}),
        ("vector", "vector", {}),
        ("text", "text", {}),
        ("hybrid", "hybrid", {}),
        ("hybrid/no-length-prior", "hybrid", {"short_lines": 0}),
        ("hybrid/length-prior-all-lines", "hybrid", {"short_code_only": False, "short_comment_ratio": 0.0}),
        *(
            (
                f"hybrid/code<{lines}x{factor}",
                "hybrid",
                {"short_lines": lines, "short_factor": factor, "short_comment_ratio": 0.0},
            )
            for lines in (5, 8, 12)
            for factor in (0.5, 0.75)
        ),
        *((f"hybrid/comments>={ratio}", "hybrid", {"short_comment_ratio": ratio}) for ratio in (0.5, 1.0, 2.0)),
        ("hybrid/comments>=1.0,code<12", "hybrid", {"short_lines": 12}),
        ("hybrid/comments>=1.0x0.75", "hybrid", {"short_factor": 0.75}),
        # Run 5 (issue 13, the R@1 gap): the length prior per whole definition and with imports as
        # comment, ties to the hit with more code; each change left out in turn, and what was not kept.
        ("hybrid/run4", "hybrid", run4),
        ("hybrid/no-whole-definition", "hybrid", {"short_whole_definition": False}),
        ("hybrid/no-imports", "hybrid", {"short_imports": False}),
        *((f"hybrid/ties-{tie}", "hybrid", {"tie_break": tie}) for tie in ("rank", "share", "vector", "text")),
        *((f"hybrid/norm={norm}", "hybrid", {"normalization": norm}) for norm in (0, 8, 16)),
        ("hybrid/one-line", "hybrid", {"short_always_below": 2}),
        ("hybrid/norm=16+one-line", "hybrid", {"normalization": 16, "short_always_below": 2}),
    ]


# --- the tuning grid: text settings x fusion settings, fused in Python ------------------------------


def load_targets(path: Path) -> dict[tuple[str, str], list[tuple[str, int, int]]]:
    targets: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            targets[(record["repo"], record["query"])] = [
                (t["path"], t["start_line"], t["end_line"]) for t in record["targets"]
            ]
    return targets


def span_rank(located: Sequence[Located], targets: list[tuple[str, int, int]]) -> int | None:
    for rank, hit in enumerate(located[:TOP_K], 1):
        if any(hit.path == p and hit.start_line <= e and hit.end_line >= s for p, s, e in targets):
            return rank
    return None


def quick_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    count = max(1, len(ranks))
    return {
        "r1": round(sum(1 for r in ranks if r == 1) / count, 3),
        "r10": round(sum(1 for r in ranks if r is not None) / count, 3),
        "mrr": round(sum(1 / r for r in ranks if r is not None) / count, 3),
    }


def fuse_located(vector: Sequence[Located], text: Sequence[Located], *, k: float, text_weight: float) -> list[Located]:
    """Reciprocal rank fusion as ``server.search`` does it, then the same overlap collapsing."""
    scores: dict[Located, float] = {}
    for weight, hits in ((1.0, vector), (text_weight, text)):
        for rank, hit in enumerate(hits, 1):
            scores[hit] = scores.get(hit, 0.0) + weight / (k + rank)
    ordered = sorted(scores, key=lambda hit: -scores[hit])
    groups: list[list[Located]] = []
    for hit in ordered:
        touching = [
            g
            for g in groups
            if g[0].path == hit.path
            and hit.start_line <= max(m.end_line for m in g)
            and hit.end_line >= min(m.start_line for m in g)
        ]
        if not touching:
            groups.append([hit])
            continue
        touching[0].append(hit)
        for other in touching[1:]:
            touching[0].extend(other)
            groups.remove(other)
    return [Located(g[0].path, min(m.start_line for m in g), max(m.end_line for m in g)) for g in groups[: TOP_K * 2]]


#: Text settings tried (``Ranking`` fields); each is fused with every (k, text weight) below.
TEXT_GRID: tuple[dict[str, Any], ...] = tuple(
    {
        "identifier_bonus": bonus,
        "label_weights": (0.1, 0.2, body, 1.0),
        "normalization": norm,
        "common_cutoff": cutoff,
        "rare_bonus": rare,
    }
    for bonus in (0.0, 2.0)
    for body in (0.4, 0.2)
    for norm in (1, 2)
    for cutoff in (1.0, 0.1, 0.03)
    for rare in (0.0, 1.0)
)
FUSION_GRID = tuple((k, w) for k in (5, 10, 20, 60) for w in (0.5, 0.75, 1.0, 1.5, 2.0))


async def tuning_grid(
    service: Any, roots: dict[str, Path], vectors: dict[str, list[float]], questions: list[Question], queries: Path
) -> list[dict[str, Any]]:
    """Span recall and MRR of every text setting x fusion setting, on all questions and on two halves."""
    from server.search import Filters, Ranking, run_search

    targets = load_targets(queries)
    ids: dict[str, list[Any]] = {}
    for repo, root in roots.items():
        async with service.engine.connect() as conn:
            ids[repo] = [row.id for row in await service._find_repositories(conn, str(root))]

    async def ranked(question: Question, mode: SearchMode, ranking: Any) -> list[Located]:
        filters = Filters(repository_ids=ids[question.repo], roles=roles_for("code", question.text))
        async with service.engine.begin() as conn:
            hits = await run_search(
                conn,
                query=question.text,
                vector=vectors[question.text] if mode == "vector" else None,
                filters=filters,
                limit=50,
                mode=mode,
                ranking=ranking,
            )
        return [Located(h.file_path, h.start_line, h.end_line) for h in hits]

    plain = Ranking(collapse=False)
    vector_lists = [await ranked(q, "vector", plain) for q in questions]
    grid: list[dict[str, Any]] = []
    for setting in TEXT_GRID:
        ranking = Ranking(collapse=False, **setting)
        text_lists = [await ranked(q, "text", ranking) for q in questions]
        text_ranks = [span_rank(t, targets[(q.repo, q.text)]) for q, t in zip(questions, text_lists, strict=True)]
        for k, weight in FUSION_GRID:
            ranks = [
                span_rank(fuse_located(v, t, k=k, text_weight=weight), targets[(q.repo, q.text)])
                for q, v, t in zip(questions, vector_lists, text_lists, strict=True)
            ]
            row: dict[str, Any] = {**setting, "k": k, "text_weight": weight, **quick_metrics(ranks)}
            row["text_only"] = quick_metrics(text_ranks)
            row["mrr_even"] = quick_metrics(ranks[0::2])["mrr"]
            row["mrr_odd"] = quick_metrics(ranks[1::2])["mrr"]
            grid.append(row)
    grid.sort(key=lambda row: (-row["mrr"], -row["r1"], -row["r10"]))
    return grid


# --- what the demotion of tests and docs costs the questions that want them ---------------------------

_TEST_DECLARATION = re.compile(
    r"^\s*(?:def (test_\w+)\(|func (Test\w+)\(t \*testing\.T\)|(?:test|it)\((?:'([^']+)'|\"([^\"]+)\"|`([^`$]+)`))"
)
_HEADING = re.compile(r"^#{1,4}\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True, slots=True)
class RoleQuestion:
    repo: str
    wants: str  # "tests" or "docs"
    text: str
    path: str
    start_line: int
    end_line: int


def role_questions(roots: dict[str, Path], per_repo: int = 15) -> list[RoleQuestion]:
    """Questions whose answer is a test or a doc section, from the trees themselves (seeded sample).

    Tests: each test function's or ``test('…')`` call's name in words (``test_redirect_keeps_auth`` →
    "redirect keeps auth"), the answer its lines up to the next test. Docs: each Markdown heading of
    three words or more, the answer its section. Neither wording says "test" or "docs", so they
    show what the default scope costs a question that does not name what it wants.
    """
    import random

    from models.roles import file_role

    found: list[RoleQuestion] = []
    for repo, root in roots.items():
        per_kind: dict[str, list[RoleQuestion]] = {"tests": [], "docs": []}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = str(path.relative_to(root))
            role = file_role(relative)
            if role not in ("test", "docs") or (role == "docs" and path.suffix.lower() not in (".md", ".rst")):
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
            pattern = _TEST_DECLARATION if role == "test" else _HEADING
            starts: list[tuple[int, str]] = []
            for number, line in enumerate(lines, 1):
                match = pattern.match(line)
                if match:
                    name = next(group for group in match.groups() if group)
                    words = " ".join(part.lower() for part in terms_of(name) if part.lower() != "test")
                    if role == "test" and "_" not in name and not name.startswith("Test"):
                        words = name  # a test('title') reads as a sentence already
                    starts.append((number, words.replace("_", " ")))
            for index, (number, words) in enumerate(starts):
                end = starts[index + 1][0] - 1 if index + 1 < len(starts) else len(lines)
                if len(words.split()) >= 3:
                    wants = "tests" if role == "test" else "docs"
                    per_kind[wants].append(RoleQuestion(repo, wants, words, relative, number, end))
        for questions in per_kind.values():
            unique = {q.text: q for q in questions}
            found.extend(
                random.Random(3).sample(sorted(unique.values(), key=lambda q: q.text), min(per_repo, len(unique)))
            )
    return found


async def role_report(service: Any, roots: dict[str, Path]) -> dict[str, Any]:
    """Span recall@10 and MRR of role questions by scope: the default, the one they want, all."""
    from server.search import Filters, run_search

    questions = role_questions(roots)
    embedder = await service.embedder()
    report: dict[str, Any] = {}
    for wants in ("tests", "docs"):
        subset = [q for q in questions if q.wants == wants]
        cases: tuple[tuple[str, Scope, str], ...] = (
            ("default scope (code)", "code", ""),
            (f"default scope, query says '{wants}'", "code", "tests for " if wants == "tests" else "docs on "),
            (f"scope={wants}", "tests" if wants == "tests" else "docs", ""),
            ("scope=all", "all", ""),
        )
        for label, scope, prefix in cases:
            ranks: list[int | None] = []
            for question in subset:
                text = prefix + question.text
                vector = list((await embedder.embed([text]))[0])
                async with service.engine.connect() as conn:
                    found = await service._find_repositories(conn, str(roots[question.repo]))
                filters = Filters(repository_ids=[row.id for row in found], roles=roles_for(scope, text))
                async with service.engine.begin() as conn:
                    hits = await run_search(conn, query=text, vector=vector, filters=filters, limit=TOP_K)
                rank = next(
                    (
                        position
                        for position, hit in enumerate(hits, 1)
                        if hit.file_path == question.path
                        and hit.start_line <= question.end_line
                        and hit.end_line >= question.start_line
                    ),
                    None,
                )
                ranks.append(rank)
            count = max(1, len(ranks))
            row = {
                "n": len(ranks),
                "recall@10": round(sum(1 for r in ranks if r is not None) / count, 3),
                "mrr": round(sum(1 / r for r in ranks if r is not None) / count, 3),
            }
            report[f"{wants}: {label}"] = row
            print(f"  role questions, {wants}: {label:<36} {row}", flush=True)
    return report


async def index_all(service: Any, roots: dict[str, Path]) -> dict[str, Any]:
    indexed: dict[str, Any] = {}
    for repo, root in roots.items():
        begin = time.perf_counter()
        started = await service.start_indexing(str(root), REPOS[repo])
        while True:
            status = await service.status(started.job_id)
            if status.status in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(3)
        if status.status != "completed":
            raise RuntimeError(f"indexing {repo} ended {status.status}: {status.error_message}")
        indexed[repo] = {
            "files": status.files_indexed,
            "chunks": status.chunks_created,
            "seconds": round(time.perf_counter() - begin, 1),
        }
        print(f"  indexed {repo}: {indexed[repo]}", flush=True)
    return indexed


async def chunk_stats(service: Any) -> dict[str, float]:
    from sqlalchemy import text

    async with service.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*) AS n, avg(end_line - start_line + 1) AS mean,"
                    " percentile_cont(0.5) WITHIN GROUP (ORDER BY end_line - start_line + 1) AS median FROM chunks"
                )
            )
        ).one()
    return {"chunks": int(row.n), "mean_lines": round(float(row.mean), 1), "median_lines": float(row.median)}


async def run(args: argparse.Namespace, roots: dict[str, Path], settings: Settings, work: Path) -> dict[str, Any]:
    from actors.pipeline import read_and_chunk
    from server.service import IndexingService

    questions = load_questions(args.queries)
    wanted = set(args.variants.split(",")) if args.variants != "all" else None
    async with IndexingService.open(settings) as service:
        if args.cache is not None:  # after open: the migrations have made the table
            print(
                f"embedding cache: {await load_cache(str(settings.database_url), args.cache)} vectors loaded",
                flush=True,
            )
        indexed = await index_all(service, roots)
        if args.cache is not None:  # now, so that a failure below does not cost the next run its vectors
            await save_cache(str(settings.database_url), args.cache)
        stats = await chunk_stats(service)
        embedder = await service.embedder()
        vectors: dict[str, list[float]] = {}
        for question in questions:
            vectors[question.text] = list((await embedder.embed([question.text]))[0])
        variants = service_variants(service, roots, vectors)

        # Baselines over the same trees and the same tree-sitter chunks.
        bm25: dict[str, BM25] = {}
        for repo, root in roots.items():
            files = [{"path": str(p.relative_to(root))} for p in sorted(root.rglob("*")) if p.is_file()]
            payload = read_and_chunk(root, files, settings)
            bm25[repo] = BM25([(f.path, c.start_line, c.end_line, c.content) for f in payload.files for c in f.chunks])
        variants.append(Variant("bm25 (baseline)", lambda q: bm25[q.repo].search(q.text, TOP_K)))
        rg = shutil.which("rg")
        if rg is not None:
            variants.append(Variant("ripgrep (baseline)", lambda q: ripgrep_search(rg, roots[q.repo], q.text, TOP_K)))
        else:
            print("  ripgrep not installed (apt-get install ripgrep): its baseline is skipped", flush=True)

        metrics: dict[str, dict[str, Any]] = {}
        latency: dict[str, float] = {}
        for variant in variants:
            if wanted is not None and variant.name not in wanted and "baseline" not in variant.name:
                continue
            answers: list[list[Located]] = []
            for question in questions:
                begin = time.perf_counter()
                answer = variant.answer(question)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                variant.latencies.append(time.perf_counter() - begin)
                answers.append(answer)
            metrics[variant.name] = score(questions, answers, args.results_dir or work, variant.name)
            if args.results_dir is not None and variant.details:
                write_misses(args.results_dir, variant, questions, args.queries)
            latency[variant.name] = round(statistics.median(variant.latencies) * 1000, 1)
        grid = await tuning_grid(service, roots, vectors, questions, args.queries) if args.tune else []
        for row in grid[:12]:
            print(f"  tuning: {row}", flush=True)
        roles = await role_report(service, roots) if args.roles else {}
        if args.cache is not None:
            await save_cache(str(settings.database_url), args.cache)
    groups = ["overall", *REPOS, *(f"{repo} [{kind}]" for repo in REPOS for kind in ("paraphrase", "keyword"))]
    for group in groups:
        print(table(metrics, group), flush=True)
        print(flush=True)
    print("search p50 ms (ranking only, query embedded beforehand):", latency, flush=True)
    return {
        "index": indexed,
        "chunk_stats": stats,
        "metrics": metrics,
        "latency_ms_p50": latency,
        "roles": roles,
        "tuning_grid": grid,
    }


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"), help="holds requests/, cobra/, got/")
    parser.add_argument("--queries", type=Path, default=DEV_SET / "queries.jsonl")
    parser.add_argument("--variants", default="all", help="comma-separated variant names (baselines always run)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding-cache dump kept across runs")
    parser.add_argument("--no-cache", dest="cache", action="store_const", const=None)
    parser.add_argument("--tune", action="store_true", help="also score a grid of text and fusion settings")
    parser.add_argument("--no-roles", dest="roles", action="store_false", help="skip the test/docs questions")
    parser.add_argument("--results-dir", type=Path, help="also keep each variant's answers (results-*.jsonl) here")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "retrieval_dev.json")
    args = parser.parse_args()
    for name in REPOS.values():
        if not (args.corpus / name).is_dir():
            parser.error(f"{args.corpus / name} is missing: extract it with {DEV_SET / 'checkout.sh'}")

    if args.results_dir is not None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    with bench_environment() as bench:
        roots: dict[str, Path] = {}
        left_out: dict[str, list[str]] = {}
        for repo, name in REPOS.items():
            roots[repo] = bench.work / "corpus" / name
            left_out[repo] = copy_tree(args.corpus / name, roots[repo])
        print(f"left out (NUL bytes / non-UTF-8 names): {left_out}", flush=True)
        env = {**os.environ, **bench.env(embedder="local", log_level=None, allowed_roots="")}
        env.update({"PYTHONPATH": str(ROOT), "dramatiq_queue_prefetch": str(args.threads)})
        os.environ.update({key: value for key, value in env.items() if key.startswith("CODEBASE_MCP_")})
        settings = Settings()
        workers = None
        try:
            workers = spawn_workers(env, bench.work / "workers.log", processes=args.processes, threads=args.threads)
            begin = time.perf_counter()
            measured = asyncio.run(run(args, roots, settings, bench.work))
            result = {
                "corpus": {repo: str(args.corpus / name) for repo, name in REPOS.items()},
                "left_out": left_out,
                **measured,
                "embedder": "local all-MiniLM-L6-v2",
                "chunk_limits": {"lines": settings.chunk_lines, "max_chars": settings.chunk_max_chars},
                "top_k": TOP_K,
                "total_seconds": round(time.perf_counter() - begin, 1),
            }
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            return 0
        finally:
            if workers is not None:
                stop_workers(workers)


if __name__ == "__main__":
    sys.exit(main())
