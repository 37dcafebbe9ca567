"""One indexing job with the real default model, measured against the raw embedder on the same chunks.

    python -m bench.real_model --files 15000 --lines 40

Generates a repository, times the bundled all-MiniLM-L6-v2 alone on a sample of its chunks
(the physical limit), then runs a real job (RabbitMQ, dramatiq worker processes, embedded
PostgreSQL) and prints time, files/s, chunks/s and pipeline/raw ratio. Writes JSON to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.stack import ROOT, bench_environment, sample_texts, spawn_workers, stop_workers
from models.lifecycle import TERMINAL_STATUSES
from models.settings import Settings
from tests.fixtures.generate_test_repo import generate_repo


async def raw_throughput(texts: list[str], batch_size: int) -> float:
    from actors.embedders.local_model import LocalModelEmbedder

    embedder = LocalModelEmbedder(batch_size=batch_size)
    await embedder.embed(texts[:8])  # load the model outside the timing
    start = time.perf_counter()
    await embedder.embed(texts)
    return len(texts) / (time.perf_counter() - start)


async def run_job(repo: Path, settings: Settings) -> dict[str, Any]:
    # Imported only now: the broker is built from the environment when ``actors`` is first imported.
    from server.service import IndexingService

    async with IndexingService.open(settings) as service:
        started = await service.start_indexing(str(repo), "bench-real-model")
        begin = time.perf_counter()
        last = ""
        while True:
            status = await service.status(started.job_id)
            line = f"{status.progress_percentage}% {status.files_indexed} files {status.chunks_created} chunks"
            if line != last:
                print(f"  [{time.perf_counter() - begin:7.1f}s] {line}", flush=True)
                last = line
            if status.status in TERMINAL_STATUSES:
                break
            await asyncio.sleep(5)
        seconds = time.perf_counter() - begin
        assert status.status == "completed", status
        return {"seconds": seconds, "files": status.files_indexed, "chunks": status.chunks_created}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=15000)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--sample", type=int, default=512, help="chunks for the raw-embedder measurement")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with bench_environment() as bench:
        work = bench.work
        # This process's own CODEBASE_MCP_* variables apply too, under the ones set here.
        env = {**os.environ, **bench.env(embedder="local", log_level=None)}
        env["dramatiq_queue_prefetch"] = str(args.threads)
        os.environ.update({key: value for key, value in env.items() if key.startswith("CODEBASE_MCP_")})
        settings = Settings()
        workers = None
        try:
            stats = generate_repo(work / "repo", args.files, args.lines, seed=42)
            print(f"repository: {stats.files} files, {stats.total_lines} lines, {stats.total_bytes / 1e6:.1f} MB")
            texts = sample_texts(work / "repo", settings, args.sample)
            raw = asyncio.run(raw_throughput(texts, settings.embed_batch_size))
            print(f"raw embedder: {raw:.1f} chunks/s on {len(texts)} chunks (batch {settings.embed_batch_size})")
            workers = spawn_workers(env, work / "workers.log", processes=args.processes, threads=args.threads)
            job = asyncio.run(run_job(work / "repo", settings))
            pipeline = job["chunks"] / job["seconds"]
            result = {
                "files": job["files"],
                "chunks": job["chunks"],
                "seconds": round(job["seconds"], 1),
                "files_per_second": round(job["files"] / job["seconds"], 2),
                "chunks_per_second": round(pipeline, 2),
                "raw_embedder_chunks_per_second": round(raw, 2),
                "ratio": round(pipeline / raw, 3),
                "avg_lines": args.lines,
                "worker_processes": args.processes,
                "worker_threads": args.threads,
            }
            print(json.dumps(result, indent=2))
            out = ROOT / "bench" / "results" / f"real_model_{args.files}.json"
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            return 0
        finally:
            if workers is not None:
                stop_workers(workers)


if __name__ == "__main__":
    sys.exit(main())
