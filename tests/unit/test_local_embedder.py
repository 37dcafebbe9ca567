"""``LocalModelEmbedder``: the bundled model run directly must give sentence-transformers' vectors."""

from __future__ import annotations

import numpy as np
import pytest

from actors.embedders import build_embedder
from actors.embedders.local_model import LocalModelEmbedder, cpu_has_native_bf16, pad_batch, resolve_runtime
from models.settings import Settings

pytestmark = pytest.mark.real_model

TEXTS = [
    "def parse_invoice_header(raw: bytes) -> Header:\n    return Header.from_bytes(raw)",
    "x",
    "class Cache:\n" + "    def get(self, key):\n        return self._data[key]\n" * 60,  # beyond 256 tokens
    "",
    "SELECT * FROM chunks WHERE repository_id = $1 ORDER BY embedding <=> $2 LIMIT 10",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from actors.embedders.local_model import bundled_model_dir

    model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True), dtype=np.float32)


def test_fp32_matches_sentence_transformers_in_input_order(reference: np.ndarray) -> None:
    # batch_size 2 forces several length-sorted sub-batches whose results must be put back in order.
    vectors = LocalModelEmbedder(batch_size=2, runtime="fp32").encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose((vectors * reference).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is only offered where the CPU computes it natively")
def test_bf16_stays_within_a_cosine_of_fp32(reference: np.ndarray) -> None:
    vectors = LocalModelEmbedder(batch_size=8, runtime="bf16").encode(TEXTS)
    assert ((vectors * reference).sum(axis=1) > 0.999).all()


async def test_embed_of_nothing_is_empty_without_loading_the_model() -> None:
    embedder = LocalModelEmbedder(runtime="fp32")
    assert (await embedder.embed([])).shape == (0, 384)
    assert embedder.runtime == ""  # never loaded


def test_unknown_runtime_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown local runtime 'int4'"):
        resolve_runtime("int4")


def test_auto_picks_bf16_only_on_a_cpu_that_has_it() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_runtime("auto") == expected


def test_settings_choose_runtime_and_threads_and_keep_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBASE_MCP_LOCAL_RUNTIME", "fp32")
    monkeypatch.setenv("CODEBASE_MCP_LOCAL_THREADS", "1")
    embedder = build_embedder(Settings(), 384)
    assert isinstance(embedder, LocalModelEmbedder)
    assert (embedder._requested, embedder._threads) == ("fp32", 1)
    # The runtime changes the numerics by less than 1e-4 in cosine: one cache and index serve all runtimes.
    assert embedder.name == LocalModelEmbedder(runtime="bf16").name == "local:all-MiniLM-L6-v2"


def test_bad_runtime_setting_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic

    monkeypatch.setenv("CODEBASE_MCP_LOCAL_RUNTIME", "int8")
    with pytest.raises(pydantic.ValidationError, match="local_runtime"):
        Settings()


def test_pad_batch_pads_every_row_to_the_longest_with_its_mask() -> None:
    ids, mask = pad_batch([[101, 7, 102], [101, 102], [101, 5, 6, 102]])
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == [[101, 7, 102, 0], [101, 102, 0, 0], [101, 5, 6, 102]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
