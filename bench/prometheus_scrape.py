"""A real Prometheus server scrapes a running stack during a job; its query API must return the files rate.

    python -m bench.prometheus_scrape [--files 2000] [--prometheus /usr/bin/prometheus]

Starts an embedded PostgreSQL, a RabbitMQ vhost, the deterministic embedding server, the real
``codebase-mcp serve`` and ``dramatiq actors.worker`` processes (tests/integration/stack.py) and
Debian's ``prometheus`` (``apt-get install prometheus``) scraping the server's ``/metrics`` and
the workers' Dramatiq exporter every 2 s. While one job runs it asks Prometheus for
``sum(rate(codebase_mcp_files_total{outcome="indexed"}[10s]))``; at the end it compares
Prometheus's view of the counter with the job's ``files_indexed``. Writes
``bench/results/prometheus_scrape.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.stack import drop_vhost, new_vhost
from models.embedded_postgres import ensure_embedded_postgres, stop_embedded_postgres
from models.lifecycle import TERMINAL_STATUSES
from tests.fixtures import fake_embedding_server
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import Stack, free_port

ROOT = Path(__file__).resolve().parent.parent
RATE_QUERY = 'sum(rate(codebase_mcp_files_total{outcome="indexed"}[10s]))'
TOTAL_QUERY = 'sum(codebase_mcp_files_total{outcome="indexed"})'
SCRAPE_INTERVAL = "2s"


def prometheus_config(server_port: int, worker_port: int) -> str:
    return f"""global:
  scrape_interval: {SCRAPE_INTERVAL}
scrape_configs:
  - job_name: codebase-mcp-server
    static_configs: [{{targets: ["127.0.0.1:{server_port}"]}}]
  - job_name: codebase-mcp-workers
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
"""


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(prometheus: str, expr: str) -> float | None:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def start_embedding_server(delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    return fake_embedding_server.spawn("--dimension", "384", "--delay-ms-per-text", str(delay_ms))


async def run_job(stack: Stack, repo: Path, prometheus: str) -> dict[str, Any]:
    rates: list[tuple[float, float]] = []
    async with stack.client() as client:
        started = await client.call("start_indexing_background", repo_path=str(repo))
        begin = time.monotonic()
        while True:
            status = await client.call("get_indexing_status", job_id=started["job_id"])
            rate = await asyncio.to_thread(scalar, prometheus, RATE_QUERY)
            elapsed = time.monotonic() - begin
            if rate is not None:
                rates.append((round(elapsed, 1), round(rate, 2)))
            print(
                f"  [{elapsed:6.1f}s] {status['progress_percentage']:3d}% {status['files_indexed']} files; "
                f"prometheus files/s: {rate}",
                flush=True,
            )
            if status["status"] in TERMINAL_STATUSES:
                break
            await asyncio.sleep(2)
    return {"status": status, "rates": rates, "seconds": round(time.monotonic() - begin, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--delay-ms-per-text", type=float, default=2.0, help="simulated embedder cost")
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    args = parser.parse_args()
    if not Path(args.prometheus).exists():
        print("prometheus not found: apt-get install -y prometheus (or pass --prometheus)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="cbm-prom-bench-"))
    vhost = new_vhost()
    data_dir = Path(tempfile.mkdtemp(prefix="cbm-prom-bench-pg-"))
    embedding, prometheus_process, stack = None, None, None
    try:
        url = ensure_embedded_postgres(data_dir, free_port())
        embedding, embedding_url = start_embedding_server(args.delay_ms_per_text)
        worker_port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
        env.update(
            {
                "CODEBASE_MCP_DATABASE_URL": url,
                "CODEBASE_MCP_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}?heartbeat=10",
                "CODEBASE_MCP_EMBEDDER": "ollama",
                "CODEBASE_MCP_OLLAMA_URL": embedding_url,
                "CODEBASE_MCP_OLLAMA_MODEL": "fake-deterministic",
                "CODEBASE_MCP_OLLAMA_DIMENSION": "384",
                "dramatiq_prom_db": str(work / "prom-db"),
                "dramatiq_prom_port": str(worker_port),
            }
        )
        stack = Stack(env=env, log_dir=work, worker_processes=2, worker_threads=2)
        stack.start_workers()
        stack.start_server()
        wait_ready(f"http://127.0.0.1:{worker_port}/metrics")

        prom_port = free_port()
        (work / "prometheus.yml").write_text(prometheus_config(stack.port, worker_port))
        prometheus_process = subprocess.Popen(
            [
                args.prometheus,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=open(work / "prometheus.log", "wb"),  # noqa: SIM115 (the process owns it)
            stderr=subprocess.STDOUT,
        )
        prometheus = f"http://127.0.0.1:{prom_port}"
        wait_ready(f"{prometheus}/-/ready")

        stats = generate_repo(work / "repo", args.files, args.lines, seed=42)
        print(f"repository: {stats.files} files; prometheus {prometheus} scraping every {SCRAPE_INTERVAL}")
        job = asyncio.run(run_job(stack, work / "repo", prometheus))
        time.sleep(5)  # two more scrapes: the last batches' counts reach Prometheus
        targets = {item["metric"]["job"]: float(item["value"][1]) for item in query(prometheus, "up")}
        total = scalar(prometheus, TOTAL_QUERY)
        peak = scalar(prometheus, f"max_over_time(({RATE_QUERY})[5m:2s])")
        status = job["status"]
        result = {
            "command": " ".join(["python -m bench.prometheus_scrape", *sys.argv[1:]]),
            "prometheus": subprocess.run(
                [args.prometheus, "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
            "files": status["files_indexed"],
            "job_status": status["status"],
            "job_seconds": job["seconds"],
            "targets_up": targets,
            "rate_query": RATE_QUERY,
            "rate_samples_during_job": job["rates"],
            "rate_samples_nonzero": sum(1 for _, rate in job["rates"] if rate > 0),
            "peak_files_per_second": round(peak, 2) if peak is not None else None,
            "prometheus_files_indexed_total": total,
            "matches_job_files_indexed": total == status["files_indexed"],
        }
        print(json.dumps(result, indent=2))
        (ROOT / "bench" / "results" / "prometheus_scrape.json").write_text(json.dumps(result, indent=2) + "\n")
        ok = (
            status["status"] == "completed"
            and result["rate_samples_nonzero"] > 0
            and result["matches_job_files_indexed"]
        )
        return 0 if ok else 1
    finally:
        if prometheus_process is not None:
            prometheus_process.terminate()
            prometheus_process.wait(timeout=30)
        if stack is not None:
            stack.stop()
        if embedding is not None:
            embedding.terminate()
            embedding.wait(timeout=10)
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        drop_vhost(vhost)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
