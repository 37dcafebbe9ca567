"""Thread layout, measured (issue 12): the text phase of one job behind a slow embedder.

One ``dramatiq actors.worker --processes 1 --threads 4`` over every queue, the tests' embedding
server at a fixed per-text delay; prints the time to ``searchable_percentage`` 100, to completion
and the longest gap between status changes. Run it against the tree to measure::

    PYTHONPATH=<tree> .venv/bin/python -m bench.twophase_layout FILES DELAY_MS_PER_TEXT
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench.stack import bench_environment
from bench.twophase import follow_job
from tests.fixtures.fake_embedding_server import control
from tests.fixtures.generate_test_repo import generate_repo
from tests.integration.stack import McpClient


async def follow(client: McpClient, job_id: str) -> dict[str, Any]:
    timeline = await follow_job(client, job_id)
    status, text_done = timeline.final, timeline.first(lambda s: s["searchable_percentage"] == 100)
    return {
        "status": status["status"],
        "searchable_100_s": None if text_done is None else round(text_done, 1),
        "done_s": round(timeline.seconds, 1),
        "longest_gap_s": round(timeline.longest_gap(), 1),
        "chunks": status["chunks_created"],
    }


def main(files: int, delay_ms: float) -> dict[str, Any]:
    with bench_environment() as bench:
        path = bench.work / "repo"
        generate_repo(path, files, 40, seed=45)
        control(bench.start_fake_embedder(), {"delay_ms_per_text": delay_ms})
        stack = bench.stack(bench.env(embedder="fake", workers="never"), processes=1, threads=4)
        stack.start_workers()
        stack.start_server()
        try:

            async def go() -> dict[str, Any]:
                async with stack.client() as client:
                    started = await client.call("start_indexing_background", repo_path=str(path), name="layout")
                    return await follow(client, started["job_id"])

            return asyncio.run(go())
        finally:
            stack.stop()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), float(sys.argv[2]))), flush=True)
