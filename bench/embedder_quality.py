"""Speed and retrieval quality of the local model's numeric variants, measured in one run.

    python -m bench.embedder_quality [--functions 500] [--variants st-fp32,fp32,bf16,onnx-fp32,onnx-int8]
        [--no-quality] [--speed-set full|mixed]

A variant ``NAME@T`` runs on T intra-op threads (torch or ONNX Runtime; default one per core);
``local-int8+bucketN`` pads every forward pass up to a multiple of N tokens (fixed shapes).

Quality: ``--functions`` functions from this Python's standard library (deterministic sample); the
query is the first sentence of the docstring, the target is the function's source without its
docstring. Exact cosine search in numpy over all targets gives MRR and recall@10 per variant, plus
the mean and minimum cosine between each variant's vectors and the ``st-fp32`` reference (the
sentence-transformers float32 path the project used before).

Speed: chunks/s on ``--chunks`` stdlib code windows that each fill the model's 256 tokens, in a
tight loop, at each of ``--batch-sizes``; the best is reported.

Dev set (``--dev-set /work/corpus-int8``, a folder holding the three repositories of
``/work/shared/retrieval-dev`` checked out as ``requests``, ``cobra``, ``got`` by its checkout.sh):
every file the product would index is chunked by the product's own scanner and chunker, every
chunk embedded by each variant, and each of the 60 queries ranked by exact cosine over its own
repository's chunks; the top 10 go through the set's ``score.py`` (span- and file-level MRR@10,
recall). This is the embedder's share of ``search_code`` (its vector half), without the text
search and fusion, so variants are compared on the one thing that differs between them.

``local-int8`` is the shipped ``CODEBASE_MCP_EMBEDDER=local-int8`` (actors/embedders/onnx_int8.py),
built into a temporary cache for the run. The other ``onnx-*`` variants are exploratory: the model
is exported with ``torch.onnx`` into a temporary directory and run with ONNX Runtime (graph fusion
on, 2 threads, no spinning); ``onnx-int8`` is ONNX Runtime's dynamic int8 quantisation of that graph (per tensor),
``onnx-int8pc`` the same per output channel. ``int8-FLAGS`` (``parse_recipe``) are recipes of
``local-int8``'s own ``Recipe`` (7-bit or uint8 weights, chosen products kept in float32) run the
way ``local-int8`` runs; ``--rounds 0`` measures quality only, ``--reference-cache`` keeps the
first variant's vectors between runs.
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

from actors.embedders.local_model import MAX_TOKENS, LocalModelEmbedder, bundled_model_dir, load_tokenizer

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
    tok = load_tokenizer()

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


def int8_variant(workdir: Path, threads: int = 0, bucket: int = 0) -> Encode:
    """The shipped ``local-int8``; ``threads`` its intra-op threads (0: one per core); ``bucket`` > 0
    pads every forward pass up to a multiple of ``bucket`` tokens (fixed shapes, an experiment)."""
    from actors.embedders.onnx_int8 import Int8OnnxEmbedder, onnx_forward

    class Bucketed(Int8OnnxEmbedder):
        def _forward(self, batch: list[list[int]]) -> np.ndarray:
            longest = max(len(ids) for ids in batch)
            return onnx_forward(self._model, batch, width=min(MAX_TOKENS, -(-longest // bucket) * bucket))

    kind = Bucketed if bucket else Int8OnnxEmbedder
    embedders: dict[int, Int8OnnxEmbedder] = {}

    def encode(texts: list[str], batch: int) -> np.ndarray:
        if batch not in embedders:
            embedders[batch] = kind(cache_root=workdir / "int8-cache", batch_size=batch, threads=threads)
        return embedders[batch].encode(texts)

    return encode


def parse_recipe(name: str) -> Any:
    """``int8-FLAG-FLAG...`` as a :class:`~actors.embedders.onnx_int8.Recipe` (per channel always):
    ``u8`` uint8 weights, ``rr`` 7-bit weights, ``emb`` embedding tables quantised too, ``fp32KIND``
    that kind of product kept in float32 in every layer (``att``, ``ao``, ``inter``, ``out``; see
    ``layer_nodes``), ``fp32KINDi`` in layer i only, ``fp32Li`` all of layer i. ``int8`` alone: int8
    weights, embeddings in float, everything else quantised."""
    from actors.embedders.onnx_int8 import Recipe, layer_nodes

    flags = name.split("-")[1:]
    keep: list[str] = []
    for flag in flags:
        if not flag.startswith("fp32"):
            continue
        what = flag[4:]
        if what.startswith("L"):
            keep += layer_nodes(int(what[1:]))
        else:
            kind = what.rstrip("0123456789")
            layers = [int(what[len(kind) :])] if what[len(kind) :] else list(range(6))
            keep += [node for layer in layers for node in layer_nodes(layer, (kind,))]
    unknown = [f for f in flags if f not in ("u8", "rr", "emb") and not f.startswith("fp32")]
    if unknown:
        raise SystemExit(f"{name}: unknown flags {unknown}")
    return Recipe(
        name,
        unsigned_weights="u8" in flags,
        reduce_range="rr" in flags,
        embeddings="emb" in flags,
        float_nodes=tuple(keep),
    )


def recipe_variant(name: str, workdir: Path, threads: int = 0) -> Encode:
    """An int8 recipe of ``parse_recipe`` built from the fused graph (made once per run) and run
    exactly as ``local-int8`` runs (same session options, batching and pooling)."""
    import onnxruntime as ort

    from actors.embedders.onnx_int8 import Int8OnnxEmbedder, export_fused, quantize

    fused = workdir / "fused.onnx"
    if not fused.exists():
        export_fused(workdir)
    path = quantize(fused, workdir / f"{name}.onnx", parse_recipe(name))
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer = load_tokenizer()
    embedders: dict[int, Int8OnnxEmbedder] = {}

    def encode(texts: list[str], batch: int) -> np.ndarray:
        if batch not in embedders:
            embedder = Int8OnnxEmbedder(cache_root=workdir / "unused", batch_size=batch, threads=threads)
            embedder._tokenizer, embedder._model, embedder.runtime = tokenizer, session, "onnx-int8"
            embedders[batch] = embedder
        return embedders[batch].encode(texts)

    return encode


def with_torch_threads(encode: Encode, threads: int) -> Encode:
    """``encode`` with torch's intra-op threads set before every call (torch's setting is per process,
    so variants with different counts can be interleaved); 0 is one per core."""
    import os

    import torch

    def run(texts: list[str], batch: int) -> np.ndarray:
        torch.set_num_threads(threads or os.cpu_count() or 1)
        return encode(texts, batch)

    return run


DEV_SET = Path("/work/shared/retrieval-dev")


def dev_corpus(root: Path) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, int, int, str]]]]:
    """The dev set's queries and, per repository, the product's chunks: (path, start, end, text)."""
    from actors.chunking import embedding_text
    from actors.pipeline import read_and_chunk
    from actors.scanning import scan_repository
    from models.settings import Settings

    settings = Settings()
    queries = [json.loads(line) for line in (DEV_SET / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    chunks: dict[str, list[tuple[str, int, int, str]]] = {}
    for repo in sorted({q["repo"] for q in queries}):
        checkout = root / repo.split("/")[1]
        if not checkout.is_dir():
            raise SystemExit(f"{checkout} is missing: extract {repo} there with {DEV_SET}/checkout.sh")
        scanned = scan_repository(checkout, max_file_bytes=settings.max_file_bytes)
        payload = read_and_chunk(checkout, [{"path": f.path} for f in scanned.files], settings)
        chunks[repo] = [
            (item.path, c.start_line, c.end_line, embedding_text(c.header, c.content))
            for item in payload.files
            for c in item.chunks
        ]
    return queries, chunks


def dev_quality(
    encode: Encode, queries: list[dict[str, Any]], chunks: dict[str, list[tuple[str, int, int, str]]], out: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """score.py's overall metrics for vector-only top-10 search with ``encode``; also every vector made."""
    import subprocess
    import sys

    lines, made = [], []
    by_repo = {repo: encode([c[3] for c in items], 32) for repo, items in chunks.items()}
    query_vectors = encode([q["query"] for q in queries], 32)
    for query, vector in zip(queries, query_vectors, strict=True):
        items, matrix = chunks[query["repo"]], by_repo[query["repo"]]
        top = np.argsort(-(matrix @ vector), kind="stable")[:10]
        results = [{"path": items[i][0], "start_line": items[i][1], "end_line": items[i][2]} for i in top]
        lines.append(json.dumps({"repo": query["repo"], "query": query["query"], "results": results}))
    made = [query_vectors, *by_repo.values()]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    scored = subprocess.run(
        [sys.executable, str(DEV_SET / "score.py"), str(DEV_SET / "queries.jsonl"), str(out), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    overall = json.loads(scored.stdout)["metrics"]["overall"]
    return overall, np.concatenate(made)


def cached_encoder(encode: Encode, path: Path) -> Encode:
    """``encode`` with its vectors kept in ``path`` (an .npz keyed by a hash of the texts), so the
    reference variant's vectors are computed once across quality runs (they are deterministic)."""
    import hashlib

    store: dict[str, Any] = dict(np.load(path)) if path.exists() else {}

    def run(texts: list[str], batch: int) -> np.ndarray:
        key = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        if key not in store:
            store[key] = encode(texts, batch)
            np.savez(path, **store)
        return store[key]

    return run


def build(variant: str, workdir: Path) -> Encode:
    """``NAME[+bucketN][@THREADS]``: ``fp32@1`` is the local fp32 path on one thread,
    ``local-int8+bucket64`` pads its forward passes to multiples of 64 tokens."""
    name, _, threads_text = variant.partition("@")
    name, _, bucket_text = name.partition("+bucket")
    threads, bucket = int(threads_text or 0), int(bucket_text or 0)
    if name == "local-int8":
        return int8_variant(workdir, threads, bucket)
    if name == "int8" or name.startswith("int8-"):
        return recipe_variant(name, workdir, threads)
    if bucket:
        raise SystemExit(f"{variant}: +bucket is measured for local-int8 only")
    if name == "st-fp32":
        return with_torch_threads(sentence_transformers_variant(), threads)
    if name.startswith("onnx-"):
        return onnx_variant(name.startswith("onnx-int8"), workdir, per_channel=name == "onnx-int8pc")
    return with_torch_threads(local_variant(name), threads)


def measure(
    variants: list[str],
    functions: int,
    chunks: int,
    batch_sizes: list[int],
    rounds: int,
    dev_set: Path | None = None,
    *,
    quality: bool = True,
    speed_set: str = "full",
    reference_cache: Path | None = None,
) -> list[dict[str, Any]]:
    """Quality per variant (unless ``quality`` is off), then speed in ``rounds`` interleaved rounds
    (best kept), so load spikes from other processes hit every variant alike. ``speed_set``:
    ``full`` windows of 256 tokens, or ``mixed``: the stdlib function bodies, of every length."""
    pairs = function_pairs(functions)
    queries, targets = [q for q, _ in pairs], [t for _, t in pairs]
    texts = full_chunks(chunks) if speed_set == "full" else targets[:chunks]
    print(f"{len(pairs)} stdlib functions; {len(texts)} {speed_set} chunks for speed", flush=True)
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    dev_reference: np.ndarray | None = None
    dev = dev_corpus(dev_set) if dev_set is not None else None
    if dev is not None:
        print(f"dev set: {len(dev[0])} queries, {sum(len(c) for c in dev[1].values())} chunks", flush=True)
    with tempfile.TemporaryDirectory(prefix="cbm-onnx-") as tmp:
        encoders = {variant: build(variant, Path(tmp)) for variant in variants}
        for variant, encode in encoders.items():
            if not quality:
                rows.append({"variant": variant, "by_batch": {}})
                continue
            if reference_cache is not None and variant == variants[0]:
                encode = cached_encoder(encode, reference_cache)
            q, t = encode(queries, 32), encode(targets, 32)
            both = np.concatenate([q, t])
            if reference is None:
                reference = both
            cosine = (both * reference).sum(axis=1)
            mrr, recall = retrieval(q, t)
            row: dict[str, Any] = {
                "variant": variant,
                "by_batch": {},
                "mrr": round(mrr, 4),
                "recall_at_10": round(recall, 4),
                "cosine_to_reference_mean": round(float(cosine.mean()), 6),
                "cosine_to_reference_min": round(float(cosine.min()), 6),
            }
            print(
                f"{variant} stdlib: mrr {row['mrr']} recall@10 {row['recall_at_10']} cosine "
                f"{row['cosine_to_reference_mean']} / {row['cosine_to_reference_min']}",
                flush=True,
            )
            if dev is not None:
                overall, vectors = dev_quality(encode, *dev, ROOT / "bench" / "results" / f"dev_vector_{variant}.jsonl")
                if dev_reference is None:
                    dev_reference = vectors
                dev_cosine = (vectors * dev_reference).sum(axis=1)
                row["dev"] = {
                    "span_mrr": overall["span"]["mrr"],
                    "span_recall_at_10": overall["span"]["recall@10"],
                    "file_mrr": overall["file"]["mrr"],
                    "file_recall_at_10": overall["file"]["recall@10"],
                    "cosine_to_reference_mean": round(float(dev_cosine.mean()), 6),
                    "cosine_to_reference_min": round(float(dev_cosine.min()), 6),
                }
                print(f"{variant} dev: {json.dumps(row['dev'])}", flush=True)
            rows.append(row)
        for _ in range(rounds):
            for row in rows:
                rates = throughput(encoders[row["variant"]], texts, batch_sizes)
                for batch, rate in rates.items():
                    row["by_batch"][str(batch)] = round(max(rate, row["by_batch"].get(str(batch), 0.0)), 1)
        for row in rows:
            if not row["by_batch"]:  # --rounds 0: quality only
                row["best_batch"], row["chunks_per_second"] = 0, 0.0
                print(json.dumps(row), flush=True)
                continue
            best = max(row["by_batch"], key=lambda b: row["by_batch"][b])
            row["best_batch"], row["chunks_per_second"] = int(best), row["by_batch"][best]
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    if "mrr" not in base:  # speed only
        lines = ["| variant | chunks/s (best batch) | speed vs first | chunks/s by batch |", "|---|---|---|---|"]
        lines.extend(
            f"| {row['variant']} | {row['chunks_per_second']} ({row['best_batch']}) "
            f"| {row['chunks_per_second'] / base['chunks_per_second']:.2f}x | {json.dumps(row['by_batch'])} |"
            for row in rows
        )
        return "\n".join(lines)
    lines = [
        "| variant | chunks/s (best batch) | speed vs first | MRR | recall@10 | MRR vs first "
        "| cos to first mean / min |",
        "|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {row['variant']} | {row['chunks_per_second']} ({row['best_batch']}) "
        f"| {row['chunks_per_second'] / (base['chunks_per_second'] or 1):.2f}x | {row['mrr']:.4f} "
        f"| {row['recall_at_10']:.3f} | {100 * (row['mrr'] / base['mrr'] - 1):+.2f} % "
        f"| {row['cosine_to_reference_mean']:.6f} / {row['cosine_to_reference_min']:.6f} |"
        for row in rows
    )
    if "dev" in base:
        lines += [
            "",
            "| variant | dev span MRR | span recall@10 | file MRR | file recall@10 | span MRR vs first "
            "| cos to first mean / min |",
            "|---|---|---|---|---|---|---|",
        ]
        lines.extend(
            f"| {row['variant']} | {row['dev']['span_mrr']:.4f} | {row['dev']['span_recall_at_10']:.3f} "
            f"| {row['dev']['file_mrr']:.4f} | {row['dev']['file_recall_at_10']:.3f} "
            f"| {100 * (row['dev']['span_mrr'] / base['dev']['span_mrr'] - 1):+.2f} % "
            f"| {row['dev']['cosine_to_reference_mean']:.6f} / {row['dev']['cosine_to_reference_min']:.6f} |"
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
    parser.add_argument("--dev-set", type=Path, help="folder with the retrieval-dev checkouts (requests, cobra, got)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "embedder_quality.json")
    parser.add_argument("--no-quality", action="store_true", help="speed rounds only (quality is deterministic)")
    parser.add_argument(
        "--reference-cache", type=Path, help=".npz keeping the first variant's vectors between quality runs"
    )
    parser.add_argument("--speed-set", choices=["full", "mixed"], default="full", help="256-token windows or bodies")
    args = parser.parse_args()
    rows = measure(
        args.variants.split(","),
        args.functions,
        args.chunks,
        [int(b) for b in args.batch_sizes.split(",")],
        args.rounds,
        args.dev_set,
        quality=not args.no_quality,
        speed_set=args.speed_set,
        reference_cache=args.reference_cache,
    )
    print(table(rows))
    out = args.output.resolve()
    out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
