"""``python -m actors.worker``: Dramatiq's CLI with the worker modules imported before the fork (issue 16).

The local pools start workers so (``server.supervisor.spawn_workers``). A real job runs through
them end to end, the metrics of the forked processes still add up in Dramatiq's exporter (the
multiprocess mode is chosen when prometheus_client is first imported, now in the main process),
and a SIGTERM to the group stops them as it stops ``dramatiq actors.worker``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import Stack, follow_job, free_port

FILES = 40


async def test_preloaded_workers_index_export_their_metrics_and_stop(
    base_env: dict[str, str], make_vhost: Callable[[], str], tmp_path: Path
) -> None:
    metrics_port = free_port()
    stack = Stack(
        env={**base_env, "CODEBASE_MCP_BROKER_URL": make_vhost(), "dramatiq_prom_port": str(metrics_port)},
        log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-prefork-logs-")),
        preload_workers=True,
    )
    generate_repo(tmp_path / "repo", FILES, 30, seed=4242)
    stack.start_workers()
    try:
        stack.start_server()
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(tmp_path / "repo"), name="prefork")
            final = (await follow_job(client, started["job_id"], timeout=300))[-1]
        assert final["status"] == "completed", final
        assert final["files_indexed"] == FILES
        log = next(stack.log_dir.glob("workers-*.log")).read_text(encoding="utf-8", errors="replace")
        assert re.search(r"imported the worker modules in [\d.]+ s before forking", log), log[:2000]
        assert log.count("Worker process is ready for action") == stack.worker_processes
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            exposed = reply.read().decode()
        recorded = re.search(r"^codebase_mcp_batches_recorded_total (\S+)$", exposed, re.MULTILINE)
        assert recorded is not None and float(recorded.group(1)) >= 1, exposed[:3000]
        assert stack.workers is not None
        os.killpg(stack.workers.pid, signal.SIGTERM)
        try:
            code = stack.workers.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail("preloaded workers still running 45 s after SIGTERM to their process group")
        assert code == 0, log[-3000:]
    finally:
        stack.stop()
