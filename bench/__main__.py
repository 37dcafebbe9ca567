"""The benchmark suite, one command: every figure measured in the same run on the same machine.

    python -m bench [--quick] [--sections embedder,pipeline,orchestration,latency,resume,search,scaling,watch,twophase]

Sections:
  embedder       raw throughput of the default local embedder (CODEBASE_MCP_EMBEDDER: local or
                 local-int8) and of fp32 (tight loop, best batch size) on chunks of the bench repo
  pipeline       a real job with that embedder through RabbitMQ and worker processes on the same
                 kind of chunks; pipeline/raw ratio; model busy % (the workers' embedder-call
                 seconds from their Prometheus exporter over the job's wall time); peak RSS
  orchestration  the same job shape with the zero-cost fake embedder (files/s, chunks/s)
  latency        job creation p50/p95, status p50/p95 with 3 jobs running, cancellation time
  resume         SIGKILL of server and workers at 30 %, time to `running` and to progress again,
                 duplicate embedding work
  search         search p50/p95 (query embedded by the real model) and HNSW recall@10 vs an exact
                 scan, at each of --search-sizes chunks (rows inserted directly, deterministic vectors)
  scaling        pipeline with 1, 2, 4 worker processes (real model and fake embedder)
  watch          a watched repository with the default embedder: seconds from saving a file to a
                 text search that finds its new text, and to its new vector (bench/watch.py)
  twophase       a job with the real model on --twophase-files files (bench/twophase.py): time to the
                 first full-text hit in the last-planned batch, to semantic 100 %, raw embedder ÷
                 pipeline time for the same chunks, longest gap between progress changes

Prints a table and writes ``bench/results/bench_<timestamp>.json`` (and ``bench/results/latest.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.stack import (
    ROOT,
    BenchEnvironment,
    bench_environment,
    embedder_seconds,
    group_members,
    peak_rss_mib,
    sample_texts,
)
from bench.watch import watch_latency
from models.lifecycle import TERMINAL_STATUSES
from models.settings import Settings
from tests.fixtures.fake_embedding_server import control
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient, Stack

SECTIONS = ("embedder", "pipeline", "orchestration", "latency", "resume", "search", "scaling", "watch", "twophase")
TERMINAL = TERMINAL_STATUSES


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * percentile(values, 50), 1), "p95_ms": round(1000 * percentile(values, 95), 1)}


def repo(bench: BenchEnvironment, name: str, files: int, lines: int, seed: int = 42) -> Path:
    path = bench.work / name
    if not path.exists():
        generate_repo(path, files, lines, seed=seed)
    return path


# --- embedder ------------------------------------------------------------------------------------


def raw_embedder(
    texts: list[str], batch_sizes: list[int], runtime: str, rounds: int = 2, embedder_name: str = "local"
) -> dict[str, Any]:
    """Best chunks/s over ``batch_sizes`` (interleaved rounds, best kept) for one runtime.

    ``embedder_name`` ``local-int8`` measures the int8 ONNX embedder (``runtime`` unused), building
    its graph in the data dir the bench's stacks use, so their jobs find it built.
    """
    from actors.embedders import int8_cache_root
    from actors.embedders.local_model import LocalModelEmbedder
    from actors.embedders.onnx_int8 import Int8OnnxEmbedder

    def make(batch: int) -> LocalModelEmbedder:
        if embedder_name == "local-int8":
            return Int8OnnxEmbedder(cache_root=int8_cache_root(Settings()), batch_size=batch)
        return LocalModelEmbedder(batch_size=batch, runtime=runtime)

    first = make(batch_sizes[0])
    first.encode(texts[:8])  # load outside the timing
    rates: dict[int, float] = {}
    for _ in range(rounds):
        for batch in batch_sizes:
            embedder = make(batch)
            embedder._model, embedder._tokenizer, embedder.runtime = first._model, first._tokenizer, first.runtime
            embedder.encode(texts[:batch])
            start = time.perf_counter()
            embedder.encode(texts)
            rates[batch] = max(rates.get(batch, 0.0), len(texts) / (time.perf_counter() - start))
    best = max(rates, key=lambda b: rates[b])
    return {
        "embedder": first.name,
        "runtime": first.runtime,
        "chunks": len(texts),
        "chunks_per_second": round(rates[best], 2),
        "best_batch": best,
        "by_batch": {str(b): round(r, 2) for b, r in rates.items()},
    }


# --- jobs through the real stack -----------------------------------------------------------------


async def follow(client: McpClient, job_id: str, interval: float = 0.5) -> dict[str, Any]:
    while True:
        status = await client.call("get_indexing_status", job_id=job_id)
        if status["status"] in TERMINAL:
            return status
        await asyncio.sleep(interval)


def stack_rss(stack: Stack) -> dict[str, Any]:
    server = [peak_rss_mib(pid) for pid in group_members(stack.server.pid)] if stack.server else []
    workers = [peak_rss_mib(pid) for pid in group_members(stack.workers.pid)] if stack.workers else []
    return {
        "server_peak_rss_mib": round(max(server, default=0.0), 1),
        "worker_peak_rss_mib": [round(w, 1) for w in workers],
    }


def run_job(
    bench: BenchEnvironment, path: Path, *, embedder: str, processes: int, threads: int, **extra: str
) -> dict[str, Any]:
    """One job on ``path`` through a fresh stack (database, vhost, server, workers); time, rates, RSS.

    ``model_busy_percent``: the workers' time inside embedder calls (their own metrics) over the
    job's wall time × worker processes. Near 100 % means the pipeline keeps the model fed and any
    loss against the raw figure is inside the calls (other processes' CPU, padding); well below,
    the model waits for the other stages.
    """
    from tests.integration.stack import free_port

    env = bench.env(embedder=embedder, **extra)
    metrics_port = free_port()
    env["dramatiq_prom_port"] = str(metrics_port)
    stack = bench.stack(env, processes=processes, threads=threads)
    stack.start_workers()
    stack.start_server()
    try:

        async def go() -> dict[str, Any]:
            async with stack.client() as client:
                begin = time.perf_counter()
                started = await client.call("start_indexing_background", repo_path=str(path), name=path.name)
                final = await follow(client, started["job_id"])
                return {"seconds": time.perf_counter() - begin, **final}

        final = asyncio.run(go())
        if final["status"] != "completed":
            raise RuntimeError(f"bench job ended {final['status']}: {final.get('error_message')}")
        seconds = final["seconds"]
        busy = embedder_seconds(metrics_port)
        return {
            "embedder": embedder,
            "embedder_seconds": round(busy, 1),
            "model_busy_percent": round(100 * busy / (seconds * processes), 1),
            "files": final["files_indexed"],
            "chunks": final["chunks_created"],
            "seconds": round(seconds, 1),
            "files_per_second": round(final["files_indexed"] / seconds, 2),
            "chunks_per_second": round(final["chunks_created"] / seconds, 2),
            "worker_processes": processes,
            "worker_threads": threads,
            **stack_rss(stack),
        }
    finally:
        stack.stop()


# --- latency -------------------------------------------------------------------------------------


def latency(bench: BenchEnvironment, repos: int, files: int, polls: int) -> dict[str, Any]:
    paths = [repo(bench, f"lat-{index}", files, 60, seed=100 + index) for index in range(repos)]
    fake = bench.start_fake_embedder()
    control(fake, {"delay_ms_per_text": 5.0, "reset_stats": True})  # slow enough that jobs stay running
    stack = bench.stack(bench.env(embedder="fake"), processes=2, threads=4)
    stack.start_workers()
    stack.start_server()
    try:

        async def go() -> dict[str, Any]:
            async with stack.client() as client:
                await client.call("list_indexing_jobs")  # warm the session
                created: list[float] = []
                ids: list[str] = []
                for path in paths:
                    answer, seconds = await client.timed("start_indexing_background", repo_path=str(path))
                    created.append(seconds)
                    ids.append(answer["job_id"])
                running = [
                    job for job in ids if (await client.call("get_indexing_status", job_id=job))["status"] == "running"
                ]
                status_times: list[float] = []
                for index in range(polls):
                    _, seconds = await client.timed("get_indexing_status", job_id=running[index % len(running)])
                    status_times.append(seconds)
                cancel_ack: list[float] = []
                cancelled: list[float] = []
                for job in ids:
                    begin = time.perf_counter()
                    answer = await client.call("cancel_indexing_background", job_id=job)
                    cancel_ack.append(time.perf_counter() - begin)
                    while answer["status"] not in TERMINAL:
                        await asyncio.sleep(0.01)
                        answer = await client.call("get_indexing_status", job_id=job)
                    cancelled.append(time.perf_counter() - begin)
                return {
                    "jobs_created": len(ids),
                    "jobs_running_while_polling": len(running),
                    "creation": ms(created),
                    "status_with_3_running": ms(status_times),
                    "status_polls": polls,
                    "cancel_ack": ms(cancel_ack),
                    "cancel_to_cancelled": ms(cancelled),
                }

        return asyncio.run(go())
    finally:
        stack.stop()
        control(fake, {"delay_ms_per_text": 0.0})


# --- resume after SIGKILL ------------------------------------------------------------------------


def resume(bench: BenchEnvironment, files: int) -> dict[str, Any]:
    import asyncpg

    path = repo(bench, "resume", files, 60, seed=7)
    fake = bench.start_fake_embedder()
    control(fake, {"delay_ms_per_text": 1.0, "reset_stats": True})
    env = bench.env(embedder="fake")
    stack = bench.stack(env, processes=2, threads=4)
    stack.start_workers()
    stack.start_server()
    try:

        async def before_kill() -> tuple[str, dict[str, Any]]:
            async with stack.client() as client:
                job = (await client.call("start_indexing_background", repo_path=str(path)))["job_id"]
                while True:
                    status = await client.call("get_indexing_status", job_id=job)
                    if status["progress_percentage"] >= 30 or status["status"] in TERMINAL:
                        return job, status
                    await asyncio.sleep(0.2)

        job, before = asyncio.run(before_kill())
        stack.kill_server(signal.SIGKILL)
        stack.kill_workers(signal.SIGKILL)
        restart = time.monotonic()
        stack.start_workers()
        stack.start_server()

        async def after() -> dict[str, Any]:
            async with stack.client() as client:
                status = await client.call("get_indexing_status", job_id=job)
                running_after = time.monotonic() - restart
                while status["batches_done"] <= before["batches_done"] and status["status"] not in TERMINAL:
                    await asyncio.sleep(0.1)
                    status = await client.call("get_indexing_status", job_id=job)
                progress_after = time.monotonic() - restart
                final = await follow(client, job)
            served = control(fake, {})["texts"]
            conn = await asyncpg.connect(env["CODEBASE_MCP_DATABASE_URL"].replace("+asyncpg", ""))
            try:
                needed = await conn.fetchval(
                    "SELECT count(DISTINCT md5(f.path || chr(10) || c.content)) FROM chunks c "
                    "JOIN files f ON f.id = c.file_id WHERE f.job_id = $1",
                    uuid.UUID(job),
                )
            finally:
                await conn.close()
            return {
                "killed_at_percent": before["progress_percentage"],
                "status_after_restart": status["status"],
                "running_after_restart_s": round(running_after, 2),
                "progress_after_restart_s": round(progress_after, 2),
                "final_status": final["status"],
                "texts_embedded": served,
                "texts_needed": needed,
                "duplicate_work_percent": round(100.0 * max(served - needed, 0) / max(needed, 1), 3),
            }

        return asyncio.run(after())
    finally:
        stack.stop()
        control(fake, {"delay_ms_per_text": 0.0})


# --- search --------------------------------------------------------------------------------------

QUERIES = [
    "parse the invoice header",
    "retry with exponential backoff",
    "open a database connection pool",
    "validate user input and raise an error",
    "compute the checksum of a file",
    "serialize an object to json",
    "read configuration from environment variables",
    "cache results in memory",
    "sort records by date",
    "send an http request with a timeout",
]


#: The nearest chunks as search finds them: the expression and predicate of the 384-d partial index.
NEAREST_384 = (
    "SELECT id FROM chunks WHERE vector_dims(embedding) = 384 "
    "ORDER BY (embedding::vector(384)) <=> $1::vector(384) LIMIT 10"
)


async def search_at(url: str, broker_url: str, size: int, queries: int) -> dict[str, Any]:
    """Insert ``size`` chunks (deterministic clustered unit vectors) directly, then time real searches."""
    import asyncpg

    from bench.synthetic import clustered_unit_vectors, insert_synthetic_chunks
    from server.service import IndexingService

    os.environ.update({"CODEBASE_MCP_DATABASE_URL": url, "CODEBASE_MCP_BROKER_URL": broker_url})
    settings = Settings()
    async with IndexingService.open(settings) as service:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            # size stored vectors + held-out ones of the same distribution, the recall queries.
            vectors = clustered_unit_vectors(size + queries, seed=size)
            probes, vectors = vectors[size:], vectors[:size]
            begin = time.perf_counter()
            await insert_synthetic_chunks(conn, vectors)
            insert_seconds = time.perf_counter() - begin
            texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(queries)]
            await service.search(texts[0])  # load the model
            times: list[float] = []
            for query in texts:
                begin = time.perf_counter()
                await service.search(query, limit=10)
                times.append(time.perf_counter() - begin)
            recalls: list[float] = []
            for vector in probes:
                async with conn.transaction():
                    await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    await conn.execute("SET LOCAL hnsw.ef_search = 40")
                    approx = await conn.fetch(NEAREST_384, np.asarray(vector))
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    exact = await conn.fetch(NEAREST_384, np.asarray(vector))
                recalls.append(len({r["id"] for r in approx} & {r["id"] for r in exact}) / 10)
        finally:
            await conn.close()
    return {
        "chunks": size,
        "vectors": "deterministic clustered unit vectors (seeded); timed queries are texts embedded by the real "
        "model inside search(); recall queries are held-out vectors of the same distribution",
        "insert_seconds_incl_hnsw": round(insert_seconds, 1),
        "queries": queries,
        **ms(times),
        "hnsw_recall_at_10": round(float(np.mean(recalls)), 4),
    }


# --- driver --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--files", type=int, help="files of the real-model job (default 1500; quick 200)")
    parser.add_argument("--lines", type=int, default=40, help="average lines per generated file")
    parser.add_argument("--fake-files", type=int, help="files of the zero-cost job (default 5000; quick 1000)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes of the real-model job")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process")
    parser.add_argument("--search-sizes", help="chunks for the search section (default 10000,100000; quick 10000)")
    parser.add_argument("--scaling", default="1,2,4", help="worker process counts of the scaling section")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--watch-files", type=int, default=1000, help="files of the watched repository (watch)")
    parser.add_argument(
        "--watch-embedder",
        choices=["default", "fake"],
        default="default",
        help="watch: the default embedder (CODEBASE_MCP_EMBEDDER) or the zero-cost fake one (large repositories)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the real-model pipeline job, e.g. --set batch_size=50 (repeatable)",
    )
    parser.add_argument("--no-before", action="store_true", help="skip the fp32/batch-64 'before' pipeline job")
    parser.add_argument("--twophase-files", type=int, help="files of the twophase job (default 2000; quick 200)")
    parser.add_argument(
        "--twophase-threads", type=int, default=4, help="threads of its one worker process (serve's default: 4)"
    )
    parser.add_argument(
        "--twophase-cold",
        action="store_true",
        help="start the twophase job with the stack (no warm-up job first): the model load shares its text phase",
    )
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    files = args.files or (200 if args.quick else 1500)
    overrides = dict(item.split("=", 1) for item in args.set)
    fake_files = args.fake_files or (1000 if args.quick else 5000)
    sizes = [int(s) for s in (args.search_sizes or ("10000" if args.quick else "10000,100000")).split(",")]
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "args": vars(args),
    }

    @contextlib.contextmanager
    def guarded(section: str) -> Iterator[None]:
        """A failing section is recorded and reported; the others still run."""
        try:
            yield
        except Exception as error:
            traceback.print_exc()
            results.setdefault("errors", {})[section] = f"{type(error).__name__}: {error}"

    def done(name: str, value: Any) -> None:
        results[name] = value
        print(f"== {name}: {json.dumps(value)}", flush=True)

    with bench_environment() as bench:
        real_repo = repo(bench, "real", files, args.lines)
        settings = Settings()
        if "embedder" in sections or "pipeline" in sections:
            with guarded("embedder"):
                texts = sample_texts(real_repo, settings, 128 if args.quick else 512)
                batches = [int(b) for b in args.batch_sizes.split(",")]
                # The product's default embedder (CODEBASE_MCP_EMBEDDER): what a user's job runs with.
                done("embedder", raw_embedder(texts, batches, "auto", embedder_name=settings.embedder))
                if results["embedder"]["runtime"] != "fp32":
                    done("embedder_fp32", raw_embedder(texts, batches, "fp32", rounds=1))
        if "pipeline" in sections:
            with guarded("pipeline"):
                # The product's defaults (plus any --set): what a user's job runs with.
                job = run_job(
                    bench,
                    real_repo,
                    embedder=settings.embedder,
                    processes=args.processes,
                    threads=args.threads,
                    **overrides,
                )
                job["settings"] = overrides
                job["ratio_to_raw"] = round(job["chunks_per_second"] / results["embedder"]["chunks_per_second"], 3)
                done("pipeline", job)
                if "embedder_fp32" in results and not (args.quick or args.no_before):
                    # The first release's defaults (fp32 model, 25-file batches, 64-text calls) on the
                    # same chunks: the "before" row.
                    before = run_job(
                        bench,
                        real_repo,
                        embedder="local",
                        processes=args.processes,
                        threads=args.threads,
                        batch_size="25",
                        batch_max_bytes="1000000",
                        embed_batch_size="64",
                        local_batch_size="64",
                        local_runtime="fp32",
                    )
                    before["ratio_to_raw_fp32"] = round(
                        before["chunks_per_second"] / results["embedder_fp32"]["chunks_per_second"], 3
                    )
                    done("pipeline_fp32_batch64", before)
        if "orchestration" in sections:
            with guarded("orchestration"):
                fake_repo = repo(bench, "fake", fake_files, args.lines, seed=43)
                control(bench.start_fake_embedder(), {"delay_ms_per_text": 0.0})
                done("orchestration", run_job(bench, fake_repo, embedder="fake", processes=2, threads=4))
        if "latency" in sections:
            with guarded("latency"):
                repos, polls = (6, 100) if args.quick else (10, 300)
                done("latency", latency(bench, repos=repos, files=300, polls=polls))
        if "resume" in sections:
            with guarded("resume"):
                done("resume", resume(bench, 1000 if args.quick else 5000))
        if "search" in sections:
            with guarded("search"):
                for size in sizes:
                    url, broker = bench.fresh_database(), bench.fresh_vhost()
                    done(f"search_{size}", asyncio.run(search_at(url, broker, size, 20 if args.quick else 50)))
        if "scaling" in sections:
            with guarded("scaling"):
                rows = []
                cores = os.cpu_count() or 1
                for processes in [int(p) for p in args.scaling.split(",")]:
                    threads = str(max(1, cores // processes))
                    real = run_job(
                        bench, real_repo, embedder="local", processes=processes, threads=2, local_threads=threads
                    )
                    fake = run_job(
                        bench,
                        repo(bench, "fake", fake_files, args.lines, seed=43),
                        embedder="fake",
                        processes=processes,
                        threads=4,
                    )
                    rows.append({"processes": processes, "local_threads": int(threads), "real": real, "fake": fake})
                    print(f"   scaling {processes}: {json.dumps(rows[-1])}", flush=True)
                done("scaling", rows)
        if "watch" in sections:
            with guarded("watch"):
                files, saves = (100, 4) if args.quick else (args.watch_files, 10)
                embedder = "fake" if args.watch_embedder == "fake" else settings.embedder
                done("watch", watch_latency(bench, embedder=embedder, files=files, lines=args.lines, saves=saves))
        if "twophase" in sections:
            with guarded("twophase"):
                from bench.twophase import twophase

                count = args.twophase_files or (200 if args.quick else 2000)
                done(
                    "twophase",
                    twophase(
                        bench,
                        repo(bench, f"twophase-{count}", count, args.lines, seed=44),
                        embedder=settings.embedder,
                        processes=1,
                        threads=args.twophase_threads,
                        cold=args.twophase_cold,
                    ),
                )
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(table(results))
    out_dir = ROOT / "bench" / "results"
    stamp = results["started"].replace(":", "").replace("-", "")
    for out in (out_dir / f"bench_{stamp}.json", out_dir / "latest.json"):
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written bench/results/bench_{stamp}.json")
    return 0


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if "embedder" in results:
        e = results["embedder"]
        what = f"{e.get('embedder', 'local')}, {e['runtime']}, batch {e['best_batch']}"
        rows.append((f"raw embedder ({what})", f"{e['chunks_per_second']} chunks/s"))
    if "embedder_fp32" in results:
        e = results["embedder_fp32"]
        rows.append((f"raw embedder (fp32, batch {e['best_batch']})", f"{e['chunks_per_second']} chunks/s"))
    if "pipeline" in results:
        p = results["pipeline"]
        rows.append(("pipeline, real model", f"{p['chunks_per_second']} chunks/s, {p['files_per_second']} files/s"))
        rows.append(("pipeline / raw (target >= 0.90)", str(p["ratio_to_raw"])))
        rows.append(("model busy (embedder calls / job time)", f"{p['model_busy_percent']} %"))
        rows.append(("peak RSS server / workers (MiB)", f"{p['server_peak_rss_mib']} / {p['worker_peak_rss_mib']}"))
    if "pipeline_fp32_batch64" in results:
        p = results["pipeline_fp32_batch64"]
        rows.append(("pipeline, fp32 batch 64 (before)", f"{p['chunks_per_second']} chunks/s"))
        rows.append(("pipeline / raw fp32 (before)", str(p["ratio_to_raw_fp32"])))
    if "orchestration" in results:
        o = results["orchestration"]
        rows.append(("zero-cost embedder", f"{o['chunks_per_second']} chunks/s, {o['files_per_second']} files/s"))
    if "latency" in results:
        lat = results["latency"]
        keys = ("creation", "status_with_3_running", "cancel_ack", "cancel_to_cancelled")
        rows.extend((f"{key} p50 / p95", f"{lat[key]['p50_ms']} / {lat[key]['p95_ms']} ms") for key in keys)
    if "resume" in results:
        r = results["resume"]
        after = f"{r['running_after_restart_s']} / {r['progress_after_restart_s']} s"
        rows.append(("resume: running / progress after restart", after))
        rows.append(("duplicate embedding work", f"{r['duplicate_work_percent']} %"))
    if "twophase" in results:
        t = results["twophase"]
        rows.append(("two phases: first text hit in the last batch", f"{t['first_text_hit_last_batch_s']} s"))
        rows.append(("two phases: semantic 100 %", f"{t['semantic_100_s']} s ({t['chunks']} chunks)"))
        rows.append(("two phases: raw embedder / pipeline (target >= 0.90)", str(t["efficiency"])))
        if "model_busy_percent" in t:
            rows.append(
                (
                    "two phases: model busy / waiting / calls beyond raw",
                    f"{t['model_busy_percent']} % / {t['model_waiting_s']} s / {t['calls_beyond_raw_s']} s",
                )
            )
        rows.append(("two phases: longest progress gap (target <= 10 s)", f"{t['longest_progress_gap_s']} s"))
        if "cpu_during_job" in t:
            c = t["cpu_during_job"]
            rows.append(
                (
                    "two phases: CPU-s worker / postgres / server / rabbitmq / client",
                    f"{c['worker_cpu_s']} / {c['postgres_cpu_s']} / {c['server_cpu_s']} / {c['rabbitmq_cpu_s']} / "
                    f"{c['bench_client_cpu_s']}, {c['machine_idle_percent']} % idle, "
                    f"{c['machine_steal_percent']} % steal",
                )
            )
        if t.get("warmup_first_vector_s") is not None:
            rows.append(("two phases: warm-up job on the fresh stack, first vector", f"{t['warmup_first_vector_s']} s"))
    for key, value in results.items():
        if key.startswith("search_"):
            rows.append((f"search p50 / p95 at {value['chunks']} chunks", f"{value['p50_ms']} / {value['p95_ms']} ms"))
            rows.append((f"HNSW recall@10 at {value['chunks']}", str(value["hnsw_recall_at_10"])))
    rows.extend(
        (
            f"{row['processes']} worker processes",
            f"real {row['real']['chunks_per_second']} chunks/s; fake {row['fake']['chunks_per_second']} chunks/s",
        )
        for row in results.get("scaling", [])
    )
    if "watch" in results:
        w = results["watch"]
        where = f"{w['files']} files, {w['embedder']}"
        for key, label in (("save_to_text", "text, target < 5 s"), ("save_to_vector", "vector")):
            figures = w[key]
            rows.append((f"watch: save to {label} ({where})", f"p50 {figures['p50_s']} / p95 {figures['p95_s']} s"))
    width = max((len(name) for name, _ in rows), default=10)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    sys.exit(main())
