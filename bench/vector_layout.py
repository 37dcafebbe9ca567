"""Typed ``vector(384)`` column with a plain HNSW index vs the untyped column with one partial
expression index per dimension (migration 0004): nearest-neighbour query time and recall.

    python -m bench.vector_layout [--chunks 20000] [--queries 200]

Both layouts live in one fresh embedded PostgreSQL with the same rows (seeded clustered unit
vectors, as ``python -m bench --sections search`` uses); the queries alternate between them, so a
loaded machine slows both alike and the ratio stays meaningful. The untyped table also holds
768-dimensional rows (a second embedder), which its 384 index must skip.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from tests.integration.stack import free_port

QUERY = {
    "typed": "SELECT id FROM typed ORDER BY embedding <=> $1 LIMIT 10",
    "partial": "SELECT id FROM untyped WHERE vector_dims(embedding) = 384 "
    "ORDER BY (embedding::vector(384)) <=> $1::vector(384) LIMIT 10",
}


def clustered(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    centres = rng.standard_normal((max(count // 200, 10), dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.standard_normal((count, dimension)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def measure(url: str, chunks: int, queries: int) -> dict[str, dict[str, float]]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector(conn)
        await conn.execute("CREATE TABLE typed (id bigint PRIMARY KEY, embedding vector(384) NOT NULL)")
        await conn.execute("CREATE TABLE untyped (id bigint PRIMARY KEY, embedding vector NOT NULL)")
        rng = np.random.default_rng(chunks)
        vectors = clustered(rng, chunks + queries, 384)
        probes, vectors = vectors[chunks:], vectors[:chunks]
        records = [(i, vectors[i]) for i in range(chunks)]
        await conn.copy_records_to_table("typed", records=records, columns=("id", "embedding"))
        await conn.copy_records_to_table("untyped", records=records, columns=("id", "embedding"))
        other = clustered(rng, chunks // 2, 768)
        await conn.copy_records_to_table(
            "untyped", records=[(chunks + i, other[i]) for i in range(len(other))], columns=("id", "embedding")
        )
        built: dict[str, float] = {}
        begin = time.perf_counter()
        await conn.execute("CREATE INDEX ON typed USING hnsw (embedding vector_cosine_ops)")
        built["typed"] = time.perf_counter() - begin
        begin = time.perf_counter()
        await conn.execute(
            "CREATE INDEX ON untyped USING hnsw ((embedding::vector(384)) vector_cosine_ops) "
            "WHERE vector_dims(embedding) = 384"
        )
        built["partial"] = time.perf_counter() - begin
        await conn.execute("CREATE STATISTICS untyped_dims ON (vector_dims(embedding)) FROM untyped")  # as 0004
        await conn.execute("ANALYZE typed; ANALYZE untyped")
        times: dict[str, list[float]] = {"typed": [], "partial": []}
        recall: dict[str, list[float]] = {"typed": [], "partial": []}
        for number, probe in enumerate(probes):
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off")
                exact = {row["id"] for row in await conn.fetch(QUERY["typed"], probe)}
            order = ("typed", "partial") if number % 2 == 0 else ("partial", "typed")
            for layout in order:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                        "set_config('hnsw.ef_search', '50', true), "
                        "set_config('plan_cache_mode', 'force_custom_plan', true)"
                    )
                    begin = time.perf_counter()
                    found = {row["id"] for row in await conn.fetch(QUERY[layout], probe)}
                    times[layout].append(time.perf_counter() - begin)
                recall[layout].append(len(found & exact) / 10)
        plans = {
            layout: "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + QUERY[layout], probes[0]))
            for layout in QUERY
        }
    finally:
        await conn.close()
    report: dict[str, dict[str, float]] = {}
    for layout, values in times.items():
        report[layout] = {
            "p50_ms": round(1000 * float(np.percentile(values, 50)), 2),
            "p95_ms": round(1000 * float(np.percentile(values, 95)), 2),
            "recall_at_10": round(float(np.mean(recall[layout])), 3),
            "index_build_s": round(built[layout], 1),
        }
        print(f"{layout} plan: " + " | ".join(line.split("'[")[0][:100] for line in plans[layout].splitlines()))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-bench-layout-"))
    try:
        url = ensure_embedded_postgres(data_dir, free_port())
        report = asyncio.run(measure(url, args.chunks, args.queries))
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    for layout, figures in report.items():
        print(f"{layout:8} {figures}")
    typed, partial = report["typed"], report["partial"]
    print(
        f"partial/typed p50 {partial['p50_ms'] / typed['p50_ms']:.2f}, p95 {partial['p95_ms'] / typed['p95_ms']:.2f} "
        f"({args.chunks} 384-d rows, +{args.chunks // 2} 768-d rows in the untyped table; {args.queries} queries)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
