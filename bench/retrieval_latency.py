"""What a ranking costs at scale: ranking-only search latency of ``server.search`` variants, interleaved.

    python -m bench.retrieval_latency [--chunks 100000] [--queries 50] [--rounds 2]

Inserts ``--chunks`` synthetic chunks as ``python -m bench --sections search`` does (seeded
clustered unit vectors, ten overlapping 40-line chunks per file), except that the ten share one
symbol, so every hit has nine sibling windows: the worst case of
:func:`server.search.definition_texts`; embeds the queries once with
the default local model, then times ``run_search`` for each variant in turn on every query, the
order of the variants reversed every other round, so that the machine's load falls on all of them
alike. The query embedding is left out: the figures are the ranking's own cost, to be read as
ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.stack import ROOT, bench_environment
from models.settings import Settings

#: (name, ``Ranking`` options): run 5's default, without its sibling lookup, and run 4's ranking.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("default", {}),
    ("no-whole-definition", {"short_whole_definition": False}),
    ("run4", {"short_whole_definition": False, "short_imports": False, "tie_break": "rank"}),
)


async def measure(url: str, broker_url: str, size: int, queries: int, rounds: int) -> dict[str, Any]:
    import asyncpg

    from bench.__main__ import QUERIES
    from bench.synthetic import clustered_unit_vectors, insert_synthetic_chunks
    from server.search import Filters, Ranking, run_search
    from server.service import IndexingService

    os.environ.update({"CODEBASE_MCP_DATABASE_URL": url, "CODEBASE_MCP_BROKER_URL": broker_url})
    async with IndexingService.open(Settings()) as service:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            vectors = clustered_unit_vectors(size, seed=size)
            begin = time.perf_counter()
            await insert_synthetic_chunks(conn, vectors, symbol="f")  # ten windows of one definition per file
            insert_seconds = time.perf_counter() - begin
        finally:
            await conn.close()
        embedder = await service.embedder()
        texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(queries)]
        embedded = [list((await embedder.embed([query]))[0]) for query in texts]
        rankings = [(name, Ranking(**options)) for name, options in VARIANTS]
        times: dict[str, list[float]] = {name: [] for name, _ in rankings}
        for round_number in range(rounds):
            for query, vector in zip(texts, embedded, strict=True):
                for name, ranking in rankings if round_number % 2 == 0 else rankings[::-1]:
                    begin = time.perf_counter()
                    async with service.engine.begin() as search_conn:
                        await run_search(
                            search_conn,
                            query=query,
                            vector=vector,
                            filters=Filters(roles=("code",)),
                            limit=10,
                            ranking=ranking,
                        )
                    times[name].append(time.perf_counter() - begin)
    result: dict[str, Any] = {"chunks": size, "insert_seconds": round(insert_seconds, 1)}
    for name, measured in times.items():
        ordered = sorted(measured)
        result[name] = {
            "n": len(ordered),
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[max(0, int(0.95 * len(ordered)) - 1)] * 1000, 1),
        }
        print(f"  {name:<22} {result[name]}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "retrieval_latency.json")
    args = parser.parse_args()
    with bench_environment() as bench:
        result = asyncio.run(
            measure(bench.fresh_database(), bench.fresh_vhost(), args.chunks, args.queries, args.rounds)
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
