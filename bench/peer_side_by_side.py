"""Side by side with cocoindex-code: a complete index of each repository, ours and the peer's, in turn.

    python -m bench.peer_side_by_side --peer-venv VENV [--repos DIR,DIR,...] [--rounds 3]
        [--output bench/results/peer_side_by_side.json]
    python -m bench.peer_side_by_side --peer-venv VENV --summarise bench/results/peer_side_by_side.json

Each round indexes every repository once with each product, from nothing, one after the other
(never at the same time), alternating which product goes first from round to round so a drift
in the machine's load falls on both:

- **ours**: ``codebase-mcp index REPO --json`` with the default stack and the default embedder
  (``local``), a fresh data dir (so initdb, the embedded PostgreSQL's start, the schema and an
  empty embedding cache are inside the run), a fresh RabbitMQ vhost, the local workers the
  command starts itself (its defaults: 1 process × 4 threads).
- **peer**: ``bench/peer_cocoindex.sh VENV MODEL_DIR REPO`` (cocoindex-code with the same bundled
  all-MiniLM-L6-v2 folder, offline, fresh settings and state, its daemon as the script's child).

Figures per run:

- wall seconds from the command's start to its exit (a complete index; start-up and shutdown in);
- CPU seconds (user + system) of every process of the product: the command's whole process tree
  (``wait4`` of the command: every descendant that was waited for, i.e. server, workers, their
  forks, initdb, pg_ctl) plus, for ours, the detached embedded PostgreSQL (postmaster with its
  reaped backends, ``cutime``/``cstime``, and its live children), read when the command has exited.
  RabbitMQ is shared by every session on this machine and cannot be split per vhost: its CPU
  during our run (all vhosts) is reported separately, as an upper bound of our share;
- peak memory: the largest sum, over one sample every 0.25 s, of the RSS of all the product's live
  processes (PostgreSQL included), and the same for PSS (shared pages split between processes,
  so forked workers and PostgreSQL's shared buffers are not counted twice);
- chunks made (ours: the job's ``chunks_created``; the peer: the ``Chunks:`` it reports).

Prints min / median / max per product and repository, and the ratio ours/peer pair by pair
(each pair from the same round, run back to back).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.process_cpu import (
    broker_cpu,
    broker_delta,
    descendants,
    memory_kib,
    parent_map,
    postmaster_pid,
    tree_cpu_seconds,
)
from bench.stack import ROOT, drop_vhost, new_vhost
from models.embedded_postgres import stop_embedded_postgres
from tests.integration.stack import free_port

DEFAULT_REPOS = ("/work/corpus/requests", "/work/corpus/cobra", "/work/corpus/got")


@dataclass
class Run:
    product: str
    repo: str
    round: int
    wall_s: float
    cpu_s: float  # the command's tree + (ours) the embedded PostgreSQL
    cpu_tree_s: float
    cpu_postgres_s: float
    cpu_broker_s: float  # RabbitMQ during the run, all vhosts (other sessions' too): an upper bound
    peak_rss_sum_mib: float
    peak_pss_sum_mib: float
    peak_processes: int
    chunks: int
    files: int
    exit_code: int
    started: str

    @property
    def cpu_per_chunk(self) -> float:
        return self.cpu_s / self.chunks if self.chunks else float("nan")


class Sampler(threading.Thread):
    """Peak RSS and PSS sums over a command's process tree and (ours) the PostgreSQL processes."""

    def __init__(self, root: int, data_dir: Path | None) -> None:
        super().__init__(daemon=True)
        self.root, self.data_dir = root, data_dir
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.postgres: set[int] = set()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.25):
            parents = parent_map()
            roots = [self.root]
            postmaster = postmaster_pid(self.data_dir)
            if postmaster is not None:
                roots.append(postmaster)
                self.postgres = descendants([postmaster], parents)
            pids = descendants(roots, parents)
            rss = pss = 0
            for pid in pids:
                one_rss, one_pss = memory_kib(pid)
                rss, pss = rss + one_rss, pss + one_pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(pids))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _timed(command: list[str], env: dict[str, str], data_dir: Path | None, log: Path) -> dict[str, Any]:
    broker_before = broker_cpu()
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    sampler = Sampler(process.pid, data_dir)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    # Its own reaped backends are in its cutime; the live ones (checkpointer, walwriter, ...) apart.
    postgres_cpu = tree_cpu_seconds(postmaster_pid(data_dir))
    return {
        "wall_s": wall,
        "cpu_tree_s": usage.ru_utime + usage.ru_stime,
        "cpu_postgres_s": postgres_cpu,
        "cpu_broker_s": broker_delta(broker_before),
        "peak_rss_sum_mib": sampler.peak_rss / 1024,
        "peak_pss_sum_mib": sampler.peak_pss / 1024,
        "peak_processes": sampler.peak_processes,
        "exit_code": process.returncode,
    }


@contextlib.contextmanager
def product_environment(work: Path, prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh data dir and RabbitMQ vhost for one ``codebase-mcp`` run, and the environment naming them.

    Everything a run of ours starts from nothing (initdb, the embedded PostgreSQL, the schema, an
    empty embedding cache) is inside it; on exit PostgreSQL is stopped and both are removed.
    """
    data_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))  # top level: PostgreSQL's user must reach it
    vhost = new_vhost(prefix)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEBASE_MCP_")}
    env.update(
        {
            "CODEBASE_MCP_DATA_DIR": str(data_dir),
            "CODEBASE_MCP_EMBEDDED_PG_PORT": str(free_port()),
            "CODEBASE_MCP_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}?heartbeat=60",
            # Other sessions' workers may hold Dramatiq's default exporter port.
            "dramatiq_prom_port": str(free_port()),
            "dramatiq_prom_db": tempfile.mkdtemp(prefix="prom-", dir=work),
        }
    )
    try:
        yield data_dir, env
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        drop_vhost(vhost)


def run_ours(repo: Path, round_: int, work: Path) -> Run:
    log = work / f"ours-{repo.name}-{round_}.log"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with product_environment(work, "cbm-peer") as (data_dir, env):
        figures = _timed(
            [str(ROOT / ".venv" / "bin" / "codebase-mcp"), "index", str(repo), "--json"], env, data_dir, log
        )
    text = log.read_text(encoding="utf-8", errors="replace")
    chunks = re.findall(r'"chunks_created":\s*(\d+)', text)
    files = re.findall(r'"files_indexed":\s*(\d+)', text)
    return Run(
        product="ours",
        repo=repo.name,
        round=round_,
        cpu_s=figures["cpu_tree_s"] + figures["cpu_postgres_s"],
        chunks=int(chunks[-1]) if chunks else 0,
        files=int(files[-1]) if files else 0,
        started=stamp,
        **figures,
    )


def run_peer(repo: Path, round_: int, work: Path, venv: Path, model_dir: Path) -> Run:
    log = work / f"peer-{repo.name}-{round_}.log"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = ["bash", str(ROOT / "bench" / "peer_cocoindex.sh"), str(venv), str(model_dir), str(repo)]
    figures = _timed(command, dict(os.environ), None, log)
    text = log.read_text(encoding="utf-8", errors="replace")
    chunks = re.findall(r"^\s*Chunks:\s*(\d+)", text, re.MULTILINE)
    files = re.findall(r"^\s*Files:\s*(\d+)", text, re.MULTILINE)
    return Run(
        product="peer",
        repo=repo.name,
        round=round_,
        cpu_s=figures["cpu_tree_s"],
        chunks=int(chunks[-1]) if chunks else 0,
        files=int(files[-1]) if files else 0,
        started=stamp,
        **figures,
    )


def _spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    return " / ".join(f"{value:.{digits}f}" for value in (min(values), statistics.median(values), max(values)))


def summary(runs: list[Run]) -> str:
    lines = ["figure: min / median / max over rounds"]
    for repo in dict.fromkeys(run.repo for run in runs):
        lines.append(f"\n## {repo}")
        for product in ("ours", "peer"):
            mine = [run for run in runs if run.repo == repo and run.product == product and run.exit_code == 0]
            if not mine:
                lines.append(f"{product}: no successful run")
                continue
            lines.append(
                f"{product} ({len(mine)} runs): wall s {_spread([r.wall_s for r in mine], 1)}; "
                f"CPU s {_spread([r.cpu_s for r in mine], 1)}; "
                f"CPU-s/chunk {_spread([r.cpu_per_chunk for r in mine], 4)}; "
                f"chunks/CPU-s {_spread([1 / r.cpu_per_chunk for r in mine], 2)}; "
                f"peak RSS sum MiB {_spread([r.peak_rss_sum_mib for r in mine], 0)}; "
                f"peak PSS sum MiB {_spread([r.peak_pss_sum_mib for r in mine], 0)}; "
                f"chunks {_spread([float(r.chunks) for r in mine], 0)}; "
                f"files {_spread([float(r.files) for r in mine], 0)}"
            )
            if product == "ours":
                lines.append(
                    f"   of which PostgreSQL CPU s {_spread([r.cpu_postgres_s for r in mine], 1)}; "
                    f"RabbitMQ CPU s during the run (all vhosts, upper bound, not in CPU s) "
                    f"{_spread([r.cpu_broker_s for r in mine], 1)}"
                )
        pairs = [
            (ours, peer)
            for ours in runs
            for peer in runs
            if ours.repo == peer.repo == repo
            and ours.round == peer.round
            and ours.product == "ours"
            and peer.product == "peer"
            and ours.exit_code == peer.exit_code == 0
        ]
        if pairs:
            lines.append(
                f"pairs ({len(pairs)}): chunks/CPU-s ours/peer "
                f"{_spread([peer.cpu_per_chunk / ours.cpu_per_chunk for ours, peer in pairs], 2)}; "
                f"same with RabbitMQ's CPU added to ours (upper bound) "
                f"{_spread([peer.cpu_per_chunk / ((o.cpu_s + o.cpu_broker_s) / o.chunks) for o, peer in pairs], 2)}; "
                f"total CPU for the same repository peer/ours "
                f"{_spread([peer.cpu_s / ours.cpu_s for ours, peer in pairs], 2)}; "
                f"wall peer/ours {_spread([peer.wall_s / ours.wall_s for ours, peer in pairs], 2)}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-venv", type=Path, required=True, help="venv with cocoindex-code (Debian python3)")
    parser.add_argument("--repos", default=",".join(DEFAULT_REPOS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--products", default="ours,peer", help="ours, peer or both (the order of round 1)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "peer_side_by_side.json")
    parser.add_argument("--summarise", type=Path, help="print the summary of a results file written before, only")
    args = parser.parse_args()
    if args.summarise is not None:
        recorded = json.loads(args.summarise.read_text(encoding="utf-8"))
        print(summary([Run(**run) for run in recorded["runs"]]))
        print(f"load average (1 min) at each run's start: {_spread(recorded['load_average_1m_at_starts'], 1)}")
        return
    from actors.embedders.local_model import bundled_model_dir

    model_dir = bundled_model_dir()
    repos = [Path(repo) for repo in args.repos.split(",")]
    for repo in repos:
        if not repo.is_dir():
            parser.error(f"not a directory: {repo}")
    products = args.products.split(",")
    work = Path(tempfile.mkdtemp(prefix="cbm-peer-bench-"))
    runs: list[Run] = []
    load = []
    for round_ in range(1, args.rounds + 1):
        for repo in repos:
            # Alternate the order per round so a drift of the shared machine's load falls on both.
            order = products if round_ % 2 else list(reversed(products))
            for product in order:
                load.append(os.getloadavg()[0])
                if product == "ours":
                    run = run_ours(repo, round_, work)
                else:
                    run = run_peer(repo, round_, work, args.peer_venv, model_dir)
                runs.append(run)
                print(json.dumps({**asdict(run), "cpu_per_chunk": round(run.cpu_per_chunk, 5)}), flush=True)
                args.output.write_text(
                    json.dumps(
                        {"runs": [asdict(r) for r in runs], "load_average_1m_at_starts": load, "logs": str(work)},
                        indent=1,
                    )
                )
    print(summary(runs))
    print(f"load average (1 min) at each run's start: {_spread(load, 1)}; logs in {work}")


if __name__ == "__main__":
    main()
