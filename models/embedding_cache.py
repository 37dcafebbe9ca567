"""Vectors already computed, keyed by embedder and the text's sha256: never embed the same text twice."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def text_hash(body: str) -> bytes:
    return hashlib.sha256(body.encode("utf-8", errors="surrogatepass")).digest()


async def lookup(conn: AsyncConnection, embedder: str, hashes: Sequence[bytes]) -> dict[bytes, Any]:
    if not hashes:
        return {}
    rows = await conn.execute(
        text(
            "SELECT text_hash, embedding FROM embedding_cache WHERE embedder = :embedder AND text_hash = ANY(:hashes)"
        ),
        {"embedder": embedder, "hashes": list(set(hashes))},
    )
    return {bytes(row.text_hash): _as_array(row.embedding) for row in rows}


def _as_array(value: Any) -> Any:
    # asyncpg with pgvector's codec returns pgvector.Vector objects, not sequences.
    if hasattr(value, "to_numpy"):
        return value.to_numpy().astype(np.float32, copy=False)
    return np.asarray(value, dtype=np.float32)


async def store(conn: AsyncConnection, embedder: str, hashes: Sequence[bytes], vectors: Sequence[Any]) -> None:
    if not hashes:
        return
    await conn.execute(
        text(
            "INSERT INTO embedding_cache (embedder, text_hash, embedding) VALUES (:embedder, :hash, :embedding) "
            "ON CONFLICT DO NOTHING"
        ),
        [{"embedder": embedder, "hash": h, "embedding": v} for h, v in zip(hashes, vectors, strict=True)],
    )
