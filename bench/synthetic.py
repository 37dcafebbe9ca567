"""A synthetic index of any size, written straight into the tables: what the search benches time.

``python -m bench --sections search`` (latency and HNSW recall at 10k-100k chunks) and
``python -m bench.retrieval_latency`` (the ranking's own cost) both need a repository of ``size``
chunks without indexing ``size`` chunks through the model, so they share this one recipe: seeded
clustered unit vectors (one centre per 200 chunks, noise 0.6), ten 40-line chunks per file.
"""

from __future__ import annotations

import uuid

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

#: Chunks per synthetic file: ten windows of 40 lines each.
CHUNKS_PER_FILE = 10
#: Rows per COPY: large enough to amortise the round trips, small enough to bound the memory.
COPY_ROWS = 5000


def clustered_unit_vectors(count: int, seed: int, dimension: int = 384) -> np.ndarray:
    """``count`` unit vectors around ``count // 200`` (at least 10) seeded centres, deterministic per seed."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(count // 200, 10), dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), count)]
    vectors += 0.6 * rng.standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


async def insert_synthetic_chunks(conn: asyncpg.Connection, vectors: np.ndarray, symbol: str | None = None) -> None:
    """Store one repository whose chunks carry ``vectors``, ten per file, and ``ANALYZE`` it.

    ``symbol`` names every chunk's definition: ``None`` gives independent windows, a name makes the
    ten windows of a file siblings of one definition (the worst case of the whole-definition lookup).
    """
    from actors.pipeline import CHUNK_COPY_COLUMNS

    size = len(vectors)
    repo_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO repositories (id, path, name, embedder, dimension) VALUES ($1, $2, 'synthetic', $3, $4)",
        repo_id,
        f"/synthetic/{size}",
        "local:all-MiniLM-L6-v2",
        vectors.shape[1],
    )
    rows = await conn.fetch(
        "INSERT INTO files (repository_id, path, content_hash, language, size_bytes, line_count) "
        "SELECT $1, 'f' || g || '.py', md5(g::text), 'python', 1000, 40 FROM generate_series(1, $2) g "
        "RETURNING id",
        repo_id,
        (size + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE,
    )
    file_ids = [row["id"] for row in rows]
    await register_vector(conn)
    for start in range(0, size, COPY_ROWS):
        records = [
            (
                file_ids[i // CHUNKS_PER_FILE],
                repo_id,
                i % CHUNKS_PER_FILE,
                1,
                40,
                "python",
                symbol,
                f"chunk {i}",
                "",
                vectors[i],
            )
            for i in range(start, min(size, start + COPY_ROWS))
        ]
        await conn.copy_records_to_table("chunks", records=records, columns=CHUNK_COPY_COLUMNS)
    await conn.execute("ANALYZE chunks")
