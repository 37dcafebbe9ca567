"""The fixed cost of ``codebase-mcp index`` (issue 15 item 3): CPU seconds on a 3-file repository.

    python -m bench.start_cost [--rounds 3] [--files 3] [--checkout DIR]

Each round runs ``codebase-mcp index REPO --json`` as the peer side-by-side does
(:mod:`bench.peer_side_by_side`): the default embedder (``local``), a fresh data dir (initdb, the
embedded PostgreSQL's start, the schema, an empty embedding cache), a fresh RabbitMQ vhost and
the local workers the command starts itself (1 process x 4 threads). On a repository this small
nearly all of it is start-up. Figures per round: wall seconds, CPU seconds of the whole process
tree (``wait4``: the CLI, Dramatiq's main process, its worker and exporter, initdb, pg_ctl) plus
the detached PostgreSQL, and a breakdown by process kind, sampled from ``/proc`` every 50 ms
(each process's last sample before it exits, so the parts add up to a little less than the
total).

``--checkout DIR`` runs another checkout's code with this venv (``PYTHONPATH=DIR``), e.g. the
merged main before a change, for a before/after on the same machine and load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

from bench.peer_side_by_side import product_environment
from bench.process_cpu import cpu_seconds, descendants, parent_map, postmaster_pid, stat_fields, tree_cpu_seconds
from bench.stack import ROOT
from tests.fixtures.generate_test_repo import generate_repo

#: Process kinds by command line, first match wins.
KINDS = (
    ("postgres", re.compile(r"postgres|initdb|pg_ctl")),
    # Dramatiq's main process, its worker processes and its exporter (forks: the same command line).
    ("workers", re.compile(r"dramatiq|actors\.worker")),
    ("cli", re.compile(r"codebase-mcp")),
)


def _kind(pid: int) -> str:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    for name, pattern in KINDS:
        if pattern.search(line):
            return name
    return "other"


class CpuSampler(threading.Thread):
    """The last CPU seconds seen of every process of the tree and of PostgreSQL, with its kind."""

    def __init__(self, root: int, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.data_dir = root, data_dir
        self.seen: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            roots = [self.root]
            postmaster = postmaster_pid(self.data_dir)
            if postmaster is not None:
                roots.append(postmaster)
            for pid in descendants(roots, parent_map()):
                if stat_fields(pid) is None:
                    continue
                kind = self.seen[pid][0] if pid in self.seen else _kind(pid)
                self.seen[pid] = (kind, cpu_seconds(pid, children=False))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        parts: dict[str, float] = defaultdict(float)
        for kind, seconds in self.seen.values():
            parts[kind] += seconds
        return dict(parts)


def one_round(repo: Path, work: Path, checkout: Path | None) -> dict[str, float]:
    with product_environment(work, "cbm-start") as (data_dir, env):
        return _measure(repo, work, checkout, data_dir, env)


def _measure(repo: Path, work: Path, checkout: Path | None, data_dir: Path, env: dict[str, str]) -> dict[str, float]:
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    log = work / f"index-{uuid.uuid4().hex[:6]}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "codebase-mcp"), "index", str(repo), "--json"],
            env=env,
            cwd=checkout or ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    sampler = CpuSampler(process.pid, data_dir)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    parts = sampler.stop()
    postgres = tree_cpu_seconds(postmaster_pid(data_dir))
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"codebase-mcp index failed; see {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime + postgres} | {
        f"{kind}_s": seconds for kind, seconds in sorted(parts.items())
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=None, help="run this checkout's code (PYTHONPATH)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbm-start-cost-"))
    repo = work / "repo"
    generate_repo(repo, args.files, 40, seed=7)
    rounds = []
    for index in range(args.rounds):
        figures = one_round(repo, work, args.checkout.resolve() if args.checkout else None)
        rounds.append(figures)
        print(f"round {index + 1}: " + "  ".join(f"{name} {value:.2f}" for name, value in figures.items()), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rounds} rounds, {args.files} files; min / median / max:")
    for name in sorted({name for figures in rounds for name in figures}):
        values = sorted(figures.get(name, 0.0) for figures in rounds)
        print(f"  {name:12s} {values[0]:.2f} / {statistics.median(values):.2f} / {values[-1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
