"""Speed and retrieval quality of the local model's numeric variants, measured in one run.

    python -m bench.embedder_quality [--functions 500] [--variants st-fp32,fp32,bf16,onnx-fp32,onnx-int8]

Quality: ``--functions`` functions from this Python's standard library (deterministic sample); the
query is the first sentence of the docstring, the target is the function's source without its
docstring. Exact cosine search in numpy over all targets gives MRR and recall@10 per variant, plus
the mean and minimum cosine between each variant's vectors and the ``st-fp32`` reference (the
sentence-transformers float32 path the project used before).

Speed: chunks/s on ``--chunks`` stdlib code windows that each fill the model's 256 tokens, in a
tight loop, at each of ``--batch-sizes``; the best is reported.

The ``onnx-*`` variants are exploratory: the model is exported with ``torch.onnx`` into a temporary
directory (needs the ``onnx`` package) and run with ONNX Runtime (graph fusion on, 2 threads, no
spinning); ``onnx-int8`` is ONNX Runtime's dynamic int8 quantisation of that graph (per tensor),
``onnx-int8pc`` the same per output channel.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from actors.embedders.local_model import MAX_TOKENS, LocalModelEmbedder, bundled_model_dir

ROOT = Path(__file__).resolve().parent.parent
Encode = Callable[[list[str], int], np.ndarray]


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo")
    return sorted(p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts))


def first_sentence(doc: str) -> str:
    paragraph = doc.strip().split("\n\n")[0]
    sentence = " ".join(paragraph.split())
    end = sentence.find(". ")
    return sentence[: end + 1] if end > 0 else sentence


def function_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(query, target) pairs: docstring's first sentence → body without the docstring."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc or node.end_lineno is None:
                continue
            query = first_sentence(doc)
            first = node.body[0]
            if len(query.split()) < 4 or query in seen or len(node.body) < 3 or first.end_lineno is None:
                continue
            # The function's lines minus the docstring statement's lines.
            kept = lines[node.lineno - 1 : first.lineno - 1] + lines[first.end_lineno : node.end_lineno]
            target = "\n".join(kept)
            if len(target) < 80:
                continue
            seen.add(query)
            pairs.append((query, target))
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def full_chunks(count: int) -> list[str]:
    """Stdlib code windows of 40 lines long enough to fill 256 tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    texts: list[str] = []
    for path in stdlib_files():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines), 40):
            window = "\n".join(lines[start : start + 40])
            if len(tokenizer.encode(window).ids) >= MAX_TOKENS:
                texts.append(window)
            if len(texts) >= count:
                return texts
    return texts


def sentence_transformers_variant() -> Encode:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_dir()), device="cpu")

    def encode(texts: list[str], batch: int) -> np.ndarray:
        return np.asarray(
            model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )

    return encode


def local_variant(runtime: str) -> Encode:
    embedders: dict[int, LocalModelEmbedder] = {}

    def encode(texts: list[str], batch: int) -> np.ndarray:
        if batch not in embedders:
            embedder = LocalModelEmbedder(batch_size=batch, runtime=runtime)
            if embedders:  # share the loaded model between batch sizes
                first = next(iter(embedders.values()))
                embedder._model, embedder._tokenizer, embedder.runtime = first._model, first._tokenizer, first.runtime
            embedders[batch] = embedder
        return embedders[batch].encode(texts)

    return encode


def onnx_variant(quantised: bool, workdir: Path, per_channel: bool = False) -> Encode:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(bundled_model_dir()), attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    exported, fused = workdir / "model.onnx", workdir / "fused.onnx"
    final = workdir / ("int8pc.onnx" if per_channel else "int8.onnx")
    if not fused.exists():
        sample = torch.ones((2, 16), dtype=torch.long)
        torch.onnx.export(
            Hidden(),
            (sample, sample, torch.zeros_like(sample)),
            str(exported),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes=dict.fromkeys(
                ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state"), {0: "batch", 1: "sequence"}
            ),
            opset_version=17,
            dynamo=False,
        )
        optimized = optimizer.optimize_model(str(exported), model_type="bert", num_heads=12, hidden_size=384)
        optimized.save_model_to_file(str(fused))
    path = fused
    if quantised:
        if not final.exists():
            quantize_dynamic(
                str(fused),
                str(final),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                extra_options={"DefaultTensorType": 1},
            )
        path = final
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.no_padding()

    def encode(texts: list[str], batch: int) -> np.ndarray:
        tokens = [item.ids for item in tok.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda index: -len(tokens[index]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), batch):
            part = order[start : start + batch]
            width = max(len(tokens[index]) for index in part)
            ids = np.zeros((len(part), width), dtype=np.int64)
            for row, index in enumerate(part):
                ids[row, : len(tokens[index])] = tokens[index]
            mask = (ids != 0).astype(np.int64)
            (states,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[part] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return encode


def retrieval(queries: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """MRR and recall@10 of exact cosine search; query i's answer is target i."""
    scores = queries @ targets.T
    correct = scores[np.arange(len(scores)), np.arange(len(scores))]
    ranks = (scores > correct[:, None]).sum(axis=1) + 1
    return float(np.mean(1.0 / ranks)), float(np.mean(ranks <= 10))


def throughput(encode: Encode, texts: list[str], batch_sizes: list[int]) -> dict[int, float]:
    rates: dict[int, float] = {}
    for batch in batch_sizes:
        encode(texts[:batch], batch)  # warm up at this shape
        start = time.perf_counter()
        encode(texts, batch)
        rates[batch] = len(texts) / (time.perf_counter() - start)
    return rates


def build(variant: str, workdir: Path) -> Encode:
    if variant == "st-fp32":
        return sentence_transformers_variant()
    if variant.startswith("onnx-"):
        return onnx_variant(variant.startswith("onnx-int8"), workdir, per_channel=variant == "onnx-int8pc")
    return local_variant(variant)


def measure(
    variants: list[str], functions: int, chunks: int, batch_sizes: list[int], rounds: int
) -> list[dict[str, Any]]:
    """Quality per variant, then speed in ``rounds`` interleaved rounds (best kept), so load spikes
    from other processes hit every variant alike."""
    pairs = function_pairs(functions)
    queries, targets = [q for q, _ in pairs], [t for _, t in pairs]
    texts = full_chunks(chunks)
    print(f"{len(pairs)} stdlib functions; {len(texts)} chunks of {MAX_TOKENS} tokens for speed", flush=True)
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    with tempfile.TemporaryDirectory(prefix="cbm-onnx-") as tmp:
        encoders = {variant: build(variant, Path(tmp)) for variant in variants}
        for variant, encode in encoders.items():
            q, t = encode(queries, 32), encode(targets, 32)
            both = np.concatenate([q, t])
            if reference is None:
                reference = both
            cosine = (both * reference).sum(axis=1)
            mrr, recall = retrieval(q, t)
            rows.append(
                {
                    "variant": variant,
                    "by_batch": {},
                    "mrr": round(mrr, 4),
                    "recall_at_10": round(recall, 4),
                    "cosine_to_reference_mean": round(float(cosine.mean()), 6),
                    "cosine_to_reference_min": round(float(cosine.min()), 6),
                }
            )
        for _ in range(rounds):
            for row in rows:
                rates = throughput(encoders[row["variant"]], texts, batch_sizes)
                for batch, rate in rates.items():
                    row["by_batch"][str(batch)] = round(max(rate, row["by_batch"].get(str(batch), 0.0)), 1)
        for row in rows:
            best = max(row["by_batch"], key=lambda b: row["by_batch"][b])
            row["best_batch"], row["chunks_per_second"] = int(best), row["by_batch"][best]
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| variant | chunks/s (best batch) | speed vs first | MRR | recall@10 | MRR vs first "
        "| cos to first mean / min |",
        "|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {row['variant']} | {row['chunks_per_second']} ({row['best_batch']}) "
        f"| {row['chunks_per_second'] / base['chunks_per_second']:.2f}x | {row['mrr']:.4f} "
        f"| {row['recall_at_10']:.3f} | {100 * (row['mrr'] / base['mrr'] - 1):+.2f} % "
        f"| {row['cosine_to_reference_mean']:.6f} / {row['cosine_to_reference_min']:.6f} |"
        for row in rows
    )
    return "\n".join(lines)


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # ONNX Runtime's optimiser and quantiser log every node
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="st-fp32,fp32,bf16,onnx-fp32,onnx-int8")
    parser.add_argument("--functions", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=128)
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds; the best is kept")
    args = parser.parse_args()
    rows = measure(
        args.variants.split(","),
        args.functions,
        args.chunks,
        [int(b) for b in args.batch_sizes.split(",")],
        args.rounds,
    )
    print(table(rows))
    out = ROOT / "bench" / "results" / "embedder_quality.json"
    out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
