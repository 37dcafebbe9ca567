"""Retrieval quality of ``search_code``: vector-only, text-only and hybrid, on the Python standard library.

    python -m bench.retrieval [--modules 400] [--queries 600] [--variants hybrid,hybrid/run4]

Builds a query set from the standard library that ships with this Python: every function or
method with a docstring gives one query, the docstring's first sentence, and one target, the
function's line span. The docstrings are removed (with ``ast`` to find them) from a temporary copy
of the modules, so the answer is never the query's own text. The copy is indexed through the real
pipeline (RabbitMQ, ``dramatiq`` worker processes, embedded PostgreSQL, the bundled
all-MiniLM-L6-v2), then every query is searched in the three modes. A hit is a returned chunk of
the right file overlapping the target's span. Prints recall@1, recall@10 and MRR@10 per mode and
writes ``bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import os
import random
import re
import signal
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import ROOT, bench_environment, spawn_workers, stop_workers
from models.lifecycle import TERMINAL_STATUSES
from models.settings import Settings

MODES = ("vector", "text", "hybrid")
TOP_K = 10
#: Not code a reader would search, or generated tables; keeps the run's size near 6,000 chunks.
SKIPPED_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "site-packages"}
    | {"dist-packages", "__pycache__", "distutils", "encodings", "venv", "unittest"}
)
#: Vectors of earlier runs (``bench.retrieval_dev``'s dump format), so a re-run embeds only new chunks.
STDLIB_CACHE = Path.home() / ".cache" / "codebase-mcp" / "bench-stdlib-embedding-cache.copy"
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])\.(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    file: str
    start: int  # the stripped copy's ``def`` line (decorators excluded), 1-based
    end: int
    function: str


def first_sentence(docstring: str) -> str:
    paragraph = inspect.cleandoc(docstring).split("\n\n")[0]
    flat = " ".join(paragraph.split())
    match = _SENTENCE_END.search(flat)
    return flat[: match.start() + 1] if match else flat


def _qualified_functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    duplicated: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                if name in found:
                    duplicated.add(name)  # property setters, overloads, platform variants
                found[name] = child
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif not isinstance(child, ast.expr):
                visit(child, prefix)  # functions defined under if/try at module level

    visit(tree, "")
    return {name: node for name, node in found.items() if name not in duplicated}


def strip_function_docstrings(source: str) -> tuple[str, dict[str, str]] | None:
    """``source`` without function docstrings, and each stripped function's first docstring sentence."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines = source.split("\n")
    sentences: dict[str, str] = {}
    removals: list[tuple[int, int, str | None]] = []  # (first line, last line, replacement) 1-based
    for name, node in _qualified_functions(tree).items():
        first = node.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
            continue
        if not isinstance(first.value.value, str) or first.end_lineno is None:
            continue
        if first.lineno == node.lineno or lines[first.lineno - 1].strip()[:3] not in ('"""', "'''", 'r""', "r''"):
            continue  # one-line ``def f(): "doc"`` or a docstring sharing its line: leave it
        if lines[first.end_lineno - 1].rstrip()[-3:] not in ('"""', "'''"):
            continue  # something follows the closing quotes on its line
        sentences[name] = first_sentence(first.value.value)
        indent = lines[first.lineno - 1][: len(lines[first.lineno - 1]) - len(lines[first.lineno - 1].lstrip())]
        removals.append((first.lineno, first.end_lineno, f"{indent}pass" if len(node.body) == 1 else None))
    for start, end, replacement in sorted(removals, reverse=True):
        lines[start - 1 : end] = [replacement] if replacement is not None else []
    stripped = "\n".join(lines)
    try:
        ast.parse(stripped)
    except SyntaxError:
        return None
    return stripped, sentences


def build_corpus(repo: Path, max_modules: int) -> list[Query]:
    """Write the stripped modules under ``repo``; return every usable query."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted(
        path
        for path in stdlib.rglob("*.py")
        if not SKIPPED_DIRS & set(path.relative_to(stdlib).parts[:-1])
        and not path.name.startswith(("test_", "_pydecimal", "_pydatetime"))
    )
    if max_modules < len(modules):
        modules = sorted(random.Random(5).sample(modules, max_modules))
    by_text: dict[str, list[Query]] = {}
    for module in modules:
        relative = str(module.relative_to(stdlib))
        stripped = strip_function_docstrings(module.read_text(encoding="utf-8", errors="replace"))
        if stripped is None:
            continue
        source, sentences = stripped
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        spans = _qualified_functions(ast.parse(source))
        for name, sentence in sentences.items():
            node = spans.get(name)
            words = sentence.split()
            if node is None or node.end_lineno is None or not 4 <= len(words) <= 40:
                continue
            by_text.setdefault(sentence.lower(), []).append(
                Query(sentence, relative, node.lineno, node.end_lineno, f"{relative}:{name}")
            )
    # A sentence shared by several functions ("Return self==value.") has no single answer.
    return [queries[0] for queries in by_text.values() if len(queries) == 1]


def rank_of_hit(query: Query, hits: list[Any]) -> int | None:
    for rank, hit in enumerate(hits, 1):
        if hit.file_path == query.file and hit.start_line <= query.end and hit.end_line >= query.start:
            return rank
    return None


def summarise(ranks: list[int | None], latencies: list[float]) -> dict[str, float]:
    count = len(ranks)
    return {
        "recall_at_1": round(sum(1 for r in ranks if r == 1) / count, 4),
        "recall_at_10": round(sum(1 for r in ranks if r is not None and r <= TOP_K) / count, 4),
        "mrr_at_10": round(sum(1.0 / r for r in ranks if r is not None and r <= TOP_K) / count, 4),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
    }


@dataclass(frozen=True, slots=True)
class _Located:
    file_path: str
    start_line: int
    end_line: int


def fuse(vector: list[_Located], text: list[_Located], *, k: float, text_weight: float, depth: int) -> list[_Located]:
    """Reciprocal rank fusion in Python, as ``server.search`` does it in SQL (for the tuning grid)."""
    scores: dict[tuple[str, int], float] = {}
    chunks: dict[tuple[str, int], _Located] = {}
    for weight, hits in ((1.0, vector[:depth]), (text_weight, text[:depth])):
        for rank, hit in enumerate(hits, 1):
            key = (hit.file_path, hit.start_line)
            chunks[key] = hit
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    best = sorted(scores, key=lambda key: -scores[key])[:TOP_K]
    return [chunks[key] for key in best]


async def tuning_grid(service: Any, repo: Path, queries: list[Query]) -> list[dict[str, Any]]:
    """Recall and MRR of fusion variants, from each method's top 100 (what was tuned, and how much it mattered)."""
    lists: list[tuple[list[_Located], list[_Located]]] = []
    for query in queries:
        pair = []
        for mode in ("vector", "text"):
            result = await service.search(query.text, repository=str(repo), limit=100, mode=mode)
            pair.append([_Located(h.file_path, h.start_line, h.end_line) for h in result.results])
        lists.append((pair[0], pair[1]))
    grid = []
    for k in (5, 10, 20, 60, 120):
        for text_weight in (0.5, 0.75, 1.0, 1.5):
            for depth in (20, 50, 100):
                ranks = [
                    rank_of_hit(query, fuse(v, t, k=k, text_weight=text_weight, depth=depth))
                    for query, (v, t) in zip(queries, lists, strict=True)
                ]
                row = summarise(ranks, [0.0])
                del row["latency_ms_p50"]
                # Halves of the (sorted, seeded) query list, to see whether a setting's gain holds on unseen queries.
                row["recall_at_10_even"] = summarise(ranks[0::2], [0.0])["recall_at_10"]
                row["recall_at_10_odd"] = summarise(ranks[1::2], [0.0])["recall_at_10"]
                grid.append({"k": k, "text_weight": text_weight, "depth": depth, **row})
    grid.sort(key=lambda row: (-row["recall_at_10"], -row["mrr_at_10"]))
    return grid


async def variant_ranks(service: Any, repo: Path, queries: list[Query], names: list[str]) -> dict[str, Any]:
    """recall@1/10 and MRR of ``bench.retrieval_dev``'s named ranking variants (``server.search.Ranking``)."""
    from bench.retrieval_dev import ranking_variants
    from models.roles import roles_for
    from server.search import Filters, Ranking, run_search

    known = {name: (mode, options) for name, mode, options in ranking_variants()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(known)}")
    async with service.engine.connect() as conn:
        ids = [row.id for row in await service._find_repositories(conn, str(repo))]
    embedder = await service.embedder()
    vectors = [list((await embedder.embed([query.text]))[0]) for query in queries]
    measured: dict[str, Any] = {}
    for name in names:
        mode, options = known[name]
        options = dict(options)
        scope = options.pop("scope", "code")
        ranking = Ranking(**options)
        ranks: list[int | None] = []
        latencies: list[float] = []
        for query, vector in zip(queries, vectors, strict=True):
            filters = Filters(repository_ids=ids, roles=roles_for(scope, query.text))
            start = time.perf_counter()
            async with service.engine.begin() as conn:
                hits = await run_search(
                    conn,
                    query=query.text,
                    vector=vector if mode != "text" else None,
                    filters=filters,
                    limit=TOP_K,
                    mode=mode,
                    ranking=ranking,
                )
            latencies.append(time.perf_counter() - start)
            ranks.append(rank_of_hit(query, hits))
        measured[name] = summarise(ranks, latencies)
        print(f"  variant {name:<36} {measured[name]}", flush=True)
    return measured


async def index_and_search(
    repo: Path, queries: list[Query], settings: Settings, tune: bool, variants: list[str], cache: Path | None
) -> dict[str, Any]:
    # Imported only now: the broker is built from the environment when ``actors`` is first imported.
    from bench.retrieval_dev import load_cache, save_cache
    from server.service import IndexingService

    async with IndexingService.open(settings) as service:
        if cache is not None:  # after open: the migrations have made the table
            print(f"embedding cache: {await load_cache(str(settings.database_url), cache)} vectors loaded", flush=True)
        started = await service.start_indexing(str(repo), "stdlib")
        begin = time.perf_counter()
        while True:
            status = await service.status(started.job_id)
            print(f"  [{time.perf_counter() - begin:6.0f}s] {status.progress_message}", flush=True)
            if status.status in TERMINAL_STATUSES:
                break
            await asyncio.sleep(15)
        assert status.status == "completed", status
        if cache is not None:
            await save_cache(str(settings.database_url), cache)
        indexed: dict[str, Any] = {"files": status.files_indexed, "chunks": status.chunks_created}
        indexed["seconds"] = round(time.perf_counter() - begin, 1)
        await service.search("warm up the embedder", repository=str(repo), limit=1, mode="vector")
        per_mode: dict[str, dict[str, float]] = {}
        ranks: dict[str, list[int | None]] = {}
        for mode in MODES:
            latencies: list[float] = []
            ranks[mode] = []
            for query in queries:
                start = time.perf_counter()
                result = await service.search(query.text, repository=str(repo), limit=TOP_K, mode=mode)
                latencies.append(time.perf_counter() - start)
                ranks[mode].append(rank_of_hit(query, result.results))
            per_mode[mode] = summarise(ranks[mode], latencies)
            print(f"  {mode:<6} {per_mode[mode]}", flush=True)
        found_by = {
            "only_vector": sum(1 for v, t in zip(ranks["vector"], ranks["text"], strict=True) if v and not t),
            "only_text": sum(1 for v, t in zip(ranks["vector"], ranks["text"], strict=True) if t and not v),
            "both": sum(1 for v, t in zip(ranks["vector"], ranks["text"], strict=True) if v and t),
        }
        measured: dict[str, Any] = {"index": indexed, "modes": per_mode, "top10_found_by": found_by}
        if variants:
            measured["variants"] = await variant_ranks(service, repo, queries, variants)
        if tune:
            grid = await tuning_grid(service, repo, queries)
            for row in grid[:8]:
                print(f"  tuning: {row}", flush=True)
            measured["tuning_grid"] = grid
        return measured


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modules", type=int, default=120, help="sample this many standard-library modules (seeded; 374 is all)"
    )
    parser.add_argument("--queries", type=int, default=400, help="sample this many queries (seeded)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tune", action="store_true", help="also score a grid of fusion settings (k, weight, depth)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    parser.add_argument(
        "--variants", default="", help="comma-separated ranking variants of bench.retrieval_dev to score as well"
    )
    parser.add_argument("--cache", type=Path, default=STDLIB_CACHE, help="embedding-cache dump kept across runs")
    parser.add_argument("--no-cache", dest="cache", action="store_const", const=None)
    args = parser.parse_args()

    # A SIGTERM (or a SIGINT to a background run, which ignores it) must still stop the workers and the database.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    with bench_environment() as bench:
        repo = bench.work / "stdlib"
        queries = build_corpus(repo, args.modules)
        available = len(queries)
        queries = sorted(random.Random(11).sample(queries, min(args.queries, available)), key=lambda q: q.function)
        lines = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in repo.rglob("*.py"))
        modules = sum(1 for _ in repo.rglob("*.py"))
        print(f"corpus: {modules} modules, {lines} lines; {len(queries)} of {available} queries")

        # This process's own CODEBASE_MCP_* variables apply too, under the ones set here.
        env = {**os.environ, **bench.env(embedder="local", log_level=None, allowed_roots="")}
        env.update({"PYTHONPATH": str(ROOT), "dramatiq_queue_prefetch": str(args.threads)})
        os.environ.update({key: value for key, value in env.items() if key.startswith("CODEBASE_MCP_")})
        settings = Settings()
        workers = None
        try:
            workers = spawn_workers(env, bench.work / "workers.log", processes=args.processes, threads=args.threads)
            begin = time.perf_counter()
            variants = [name for name in args.variants.split(",") if name]
            measured = asyncio.run(index_and_search(repo, queries, settings, args.tune, variants, args.cache))
            result = {
                "corpus": {
                    "python": sys.version.split()[0],
                    "modules": sum(1 for _ in repo.rglob("*.py")),
                    "lines": lines,
                    "queries_available": available,
                    "queries": len(queries),
                },
                **measured,
                "embedder": "local all-MiniLM-L6-v2",
                "top_k": TOP_K,
                "total_seconds": round(time.perf_counter() - begin, 1),
            }
            print(json.dumps(result, indent=2))
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            return 0
        finally:
            if workers is not None:
                stop_workers(workers)


if __name__ == "__main__":
    sys.exit(main())
