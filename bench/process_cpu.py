"""CPU seconds and memory of process trees from /proc, for the benchmarks that measure whole stacks.

Linux only (the project's machine class). A process that exits between two readings takes its CPU
with it unless its parent reaped it (``children=True`` adds the reaped children's time), so the
figures are lower bounds for trees whose processes come and go.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is index 0, ppid 1, utime 11)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int, *, children: bool) -> float:
    """User + system CPU seconds of ``pid`` (0 once it is gone), and of its reaped children with ``children``."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:  # cutime + cstime: the children this process has reaped
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def parent_map() -> dict[int, int]:
    """Every live process's parent, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                found[int(entry.name)] = int(fields[1])
    return found


def descendants(roots: list[int], parents: dict[int, int]) -> set[int]:
    """``roots`` (those alive) and every process below them."""
    found = {root for root in roots if root in parents}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


def postmaster_pid(data_dir: Path | None) -> int | None:
    """The embedded PostgreSQL's postmaster under ``data_dir`` (None when it is not running)."""
    if data_dir is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    return None


def broker_pids() -> list[int]:
    """RabbitMQ's processes (the Erlang VM and its helpers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in {"beam.smp", "epmd", "erl_child_setup"}:
                    pids.append(int(entry.name))
    return pids


def broker_cpu() -> dict[int, float]:
    """CPU seconds of each RabbitMQ process, by pid."""
    return {pid: cpu_seconds(pid, children=True) for pid in broker_pids()}


def broker_delta(before: dict[int, float]) -> float:
    """RabbitMQ's CPU since ``before``, over the processes alive at both ends (one that exits meanwhile
    would otherwise count negative)."""
    after = broker_cpu()
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def tree_cpu_seconds(root: int | None) -> float:
    """CPU seconds of ``root``, every live process below it and the children they reaped (0 for None)."""
    if root is None:
        return 0.0
    live = descendants([root], parent_map()) - {root}
    return cpu_seconds(root, children=True) + sum(cpu_seconds(pid, children=True) for pid in live)
