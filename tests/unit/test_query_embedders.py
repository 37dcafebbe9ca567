"""Which embedder a search asks for a repository's query vector, and which vectors a write refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.embedders import EmbedderUnavailableError, build_query_embedder
from actors.embedders.local_model import MODEL_NAME, LocalModelEmbedder
from actors.embedders.ollama import OllamaEmbedder
from actors.embedders.onnx_int8 import NAME as INT8_NAME
from actors.embedders.onnx_int8 import Int8OnnxEmbedder
from actors.pipeline import foreign_vectors
from models.settings import Settings


def test_an_ollama_repository_gets_its_own_model_with_one_short_attempt() -> None:
    settings = Settings(embedder="local", ollama_url="http://embed:11434", query_embed_timeout_seconds=3)
    embedder = build_query_embedder(settings, "ollama:nomic-embed-text", 768)
    assert isinstance(embedder, OllamaEmbedder)
    assert (embedder.name, embedder.dimension) == ("ollama:nomic-embed-text", 768)
    assert embedder._max_attempts == 1 and embedder._timeout_seconds == 3
    assert embedder._endpoint == "http://embed:11434/api/embed"


def test_a_local_repository_gets_the_bundled_model_whatever_is_configured() -> None:
    settings = Settings(embedder="ollama", ollama_dimension=768)
    assert isinstance(build_query_embedder(settings, f"local:{MODEL_NAME}", 384), LocalModelEmbedder)


def test_an_int8_repository_gets_the_int8_graph_whatever_is_configured(tmp_path: Path) -> None:
    # Built lazily on the first query, under DATA_DIR like the workers' copy.
    settings = Settings(embedder="local", data_dir=tmp_path)
    embedder = build_query_embedder(settings, INT8_NAME, 384)
    assert isinstance(embedder, Int8OnnxEmbedder)
    assert embedder.name == INT8_NAME


def test_an_embedder_this_version_cannot_make_is_named() -> None:
    with pytest.raises(EmbedderUnavailableError, match="no embedder 'remote:x' \\(1024 dimensions\\)"):
        build_query_embedder(Settings(), "remote:x", 1024)


def test_vectors_of_another_model_are_refused_even_at_the_same_dimension() -> None:
    assert foreign_vectors("ollama:b", 384, "ollama:b", 384) is None
    assert foreign_vectors("ollama:b", 384, None, None) is None  # a repository never planned by this version
    reason = foreign_vectors("ollama:b", 384, "ollama:a", 384)
    assert reason is not None
    assert reason.startswith("the embed worker makes ollama:b vectors (384 dimensions) but the job was planned for")
    assert "give every worker the same embedder settings" in reason
    assert foreign_vectors("ollama:a", 768, "ollama:a", 384) is not None
