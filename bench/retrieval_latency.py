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
import uuid
from pathlib import Path
from typing import Any

import numpy as np

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
    from pgvector.asyncpg import register_vector

    from actors.pipeline import CHUNK_COPY_COLUMNS
    from bench.__main__ import QUERIES
    from server.search import Filters, Ranking, run_search
    from server.service import IndexingService

    os.environ.update({"CODEBASE_MCP_DATABASE_URL": url, "CODEBASE_MCP_BROKER_URL": broker_url})
    async with IndexingService.open(Settings()) as service:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rng = np.random.default_rng(size)
            centres = rng.standard_normal((max(size // 200, 10), 384)).astype(np.float32)
            noise = 0.6 * rng.standard_normal((size, 384)).astype(np.float32)
            vectors = centres[rng.integers(0, len(centres), size)] + noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            repo_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO repositories (id, path, name, embedder, dimension) VALUES ($1, $2, 'synthetic', $3, 384)",
                repo_id,
                f"/synthetic/{size}",
                "local:all-MiniLM-L6-v2",
            )
            per_file = 10
            rows = await conn.fetch(
                "INSERT INTO files (repository_id, path, content_hash, language, size_bytes, line_count) "
                "SELECT $1, 'f' || g || '.py', md5(g::text), 'python', 1000, 40 FROM generate_series(1, $2) g "
                "RETURNING id",
                repo_id,
                (size + per_file - 1) // per_file,
            )
            file_ids = [row["id"] for row in rows]
            await register_vector(conn)
            begin = time.perf_counter()
            for start in range(0, size, 5000):
                records = [
                    (
                        file_ids[i // per_file],
                        repo_id,
                        i % per_file,
                        1,
                        40,
                        "python",
                        "f",  # one symbol per file: ten windows of one definition
                        f"chunk {i}",
                        "",
                        vectors[i],
                    )
                    for i in range(start, min(size, start + 5000))
                ]
                await conn.copy_records_to_table("chunks", records=records, columns=CHUNK_COPY_COLUMNS)
            insert_seconds = time.perf_counter() - begin
            await conn.execute("ANALYZE chunks")
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
