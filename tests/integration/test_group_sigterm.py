"""SIGTERM to the workers' process group (systemd's default, ``kill -- -PGID``) stops them (issue 16, defect 10).

Before, each worker process got two SIGTERMs (one direct, one forwarded by Dramatiq's main
process), took the second for "kill now", ``sys.exit``-ed its main thread and waited for ever on its
non-daemon threads; the stop never finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import Stack

#: A clean stop takes a few seconds; the hang lasted for ever (the harness's own fallback is 60 s).
HANG_SECONDS = 45


def test_sigterm_to_the_process_group_stops_the_workers(
    base_env: dict[str, str], make_vhost: Callable[[], str]
) -> None:
    stack = Stack(
        env={**base_env, "CODEBASE_MCP_BROKER_URL": make_vhost()},
        log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-sigterm-logs-")),
    )
    stack.start_workers()
    try:
        assert stack.workers is not None
        log = next(stack.log_dir.glob("workers-*.log"))
        deadline = time.monotonic() + 120
        while (
            log.read_text(encoding="utf-8", errors="replace").count("Worker process is ready") < stack.worker_processes
        ):
            assert stack.workers.poll() is None, "workers exited at start"
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.5)
        os.killpg(stack.workers.pid, signal.SIGTERM)
        try:
            code = stack.workers.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"workers still running {HANG_SECONDS} s after SIGTERM to their process group (hang)")
        assert code == 0, log.read_text(encoding="utf-8", errors="replace")[-3000:]
    finally:
        stack.kill_workers(signal.SIGKILL)
