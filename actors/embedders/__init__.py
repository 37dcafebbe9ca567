"""Embedding backends behind one interface, chosen by ``CODEBASE_MCP_EMBEDDER``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.embedders.base import Embedder, EmbedderRejectedError, EmbedderUnavailableError
from actors.embedders.ollama import OllamaEmbedder, probe_dimension
from models.settings import Settings

# The local backends (local_model, onnx_int8 and their numpy) are imported by the functions that
# pick them: the server imports this package at start, whatever its embedder (issue 16).

__all__ = [
    "Embedder",
    "EmbedderRejectedError",
    "EmbedderUnavailableError",
    "build_embedder",
    "build_query_embedder",
    "configured_dimension",
    "configured_name",
]


def configured_name(settings: Settings) -> str:
    """The ``name`` the configured embedder will have (``local:<model>``, ``ollama:<model>``).

    Costs nothing: no model is loaded and no server is asked, so the planner can compare it with
    the embedder a repository was indexed with. Must stay equal to ``build_embedder(...).name``.
    """
    if settings.embedder == "local":
        from actors.embedders.local_model import MODEL_NAME

        return f"local:{MODEL_NAME}"
    if settings.embedder == "local-int8":
        from actors.embedders.onnx_int8 import NAME

        return NAME
    return f"ollama:{settings.ollama_model}"


def int8_cache_root(settings: Settings) -> Path:
    """Where ``local-int8`` keeps the graph it builds from the bundled model."""
    return settings.data_dir / "models"


def configured_dimension(settings: Settings) -> int:
    """The vector size the configured embedder produces (probing an Ollama model once if needed)."""
    if settings.embedder in ("local", "local-int8"):
        from actors.embedders.local_model import bundled_model_dimension

        return bundled_model_dimension()
    if settings.ollama_dimension is not None:
        return settings.ollama_dimension
    return asyncio.run(probe_dimension(settings.ollama_url, settings.ollama_model))


async def configured_dimension_async(settings: Settings) -> int:
    if settings.embedder == "ollama" and settings.ollama_dimension is None:
        return await probe_dimension(settings.ollama_url, settings.ollama_model)
    return configured_dimension(settings)


def build_embedder(settings: Settings, dimension: int) -> Embedder:
    if settings.embedder == "local":
        return _local_embedder(settings)
    if settings.embedder == "local-int8":
        return _int8_embedder(settings)
    return OllamaEmbedder(
        url=settings.ollama_url,
        model=settings.ollama_model,
        dimension=dimension,
        batch_size=settings.embed_batch_size,
        max_attempts=settings.embed_max_attempts,
        retry_base_seconds=settings.embed_retry_base_seconds,
        timeout_seconds=settings.embed_timeout_seconds,
    )


def build_query_embedder(settings: Settings, name: str, dimension: int) -> Embedder:
    """An embedder for search queries over repositories indexed with ``name`` (``local:<model>``,
    ``local-int8:<model>``, ``ollama:<model>``), whatever this process is configured with.

    Ollama models are asked at ``OLLAMA_URL`` with one attempt and ``QUERY_EMBED_TIMEOUT_SECONDS``:
    a search must not wait through the indexing retries (about 8 s) before it can fall back to full
    text.

    Raises:
        EmbedderUnavailableError: no backend of this version makes ``name``'s vectors.
    """
    backend, _, model = name.partition(":")
    if backend == "ollama" and model:
        return OllamaEmbedder(
            url=settings.ollama_url,
            model=model,
            dimension=dimension,
            max_attempts=1,
            timeout_seconds=settings.query_embed_timeout_seconds,
        )
    if name == configured_name(settings):
        return build_embedder(settings, dimension)
    from actors.embedders.local_model import MODEL_NAME
    from actors.embedders.onnx_int8 import NAME as INT8_NAME

    if backend == "local" and model == MODEL_NAME:
        return _local_embedder(settings)
    if name == INT8_NAME:
        return _int8_embedder(settings)
    raise EmbedderUnavailableError(f"this server has no embedder {name!r} ({dimension} dimensions)")


def _local_embedder(settings: Settings) -> Embedder:
    from actors.embedders.local_model import LocalModelEmbedder

    return LocalModelEmbedder(
        batch_size=settings.local_batch_size, runtime=settings.local_runtime, threads=settings.local_threads
    )


def _int8_embedder(settings: Settings) -> Embedder:
    from actors.embedders.onnx_int8 import Int8OnnxEmbedder

    return Int8OnnxEmbedder(
        cache_root=int8_cache_root(settings), batch_size=settings.local_batch_size, threads=settings.local_threads
    )
