"""``plan_job``: scan the repository, fix the file list in the ledger, dispatch the first batches."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import dramatiq
from sqlalchemy import text

from actors.broker import resources
from actors.dispatch import dispatch_window, promote_and_plan
from actors.messages import PLAN_QUEUE, STAGE_RETRIES
from actors.scanning import scan_repository
from models import jobs, ledger
from models.logs import log_context

logger = logging.getLogger(__name__)

#: Scanning is given the first few percent of the progress bar; batches fill the rest.
SCAN_SHARE = 5


@dramatiq.actor(queue_name=PLAN_QUEUE, time_limit=1_800_000, **STAGE_RETRIES)
async def plan_job(job_id: str) -> None:
    """Plan a running job once. A repeated message (redelivery, resume) only tops up the window."""
    res = await resources.get()
    job = uuid.UUID(job_id)
    with log_context(job_id=job_id):
        async with res.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT status, repo_path, planned_at FROM indexing_jobs WHERE id = :id"), {"id": job}
                )
            ).first()
        if row is None or row.status != "running":
            return
        if row.planned_at is not None:
            async with res.engine.begin() as conn:
                await dispatch_window(conn, job, res.settings.batches_in_flight)
            return
        root = Path(row.repo_path)
        if not root.is_dir():
            async with res.engine.begin() as conn:
                await jobs.fail_job(conn, job, f"repository path {root} is no longer a readable directory")
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)
            return
        logger.info("scanning %s", root)
        async with res.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET phase = 'scanning', updated_at = now(), "
                    "progress_message = 'scanning: listing files under ' || repo_path "
                    "WHERE id = :id AND status = 'running' AND planned_at IS NULL"
                ),
                {"id": job},
            )
        scan = await asyncio.to_thread(scan_repository, root, max_file_bytes=res.settings.max_file_bytes)
        batches = ledger.split_into_batches(
            [(item.path, item.size) for item in scan.files],
            max_files=res.settings.batch_size,
            max_bytes=res.settings.batch_max_bytes,
        )
        skipped = sum(scan.skipped.values())
        finished = False
        async with res.engine.begin() as conn:
            locked = (
                await conn.execute(
                    text("SELECT status, planned_at FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job}
                )
            ).first()
            if locked is None or locked.status != "running" or locked.planned_at is not None:
                return
            await ledger.write_plan(conn, job, batches)
            message = f"chunking: {len(scan.files):,} files in {len(batches):,} batches to index" + (
                f", {skipped:,} skipped" if skipped else ""
            )
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET planned_at = now(), updated_at = now(), files_total = :total, "
                    "batches_total = :batches, files_skipped = :skipped, phase = 'chunking', "
                    "progress_percentage = GREATEST(progress_percentage, :pct), progress_message = :message "
                    "WHERE id = :id"
                ),
                {
                    "id": job,
                    "total": len(scan.files),
                    "batches": len(batches),
                    "skipped": skipped,
                    "pct": SCAN_SHARE,
                    "message": message,
                },
            )
            await jobs.add_event(
                conn, job, "planned", {"files": len(scan.files), "batches": len(batches), "skipped": scan.skipped}
            )
            if not batches:
                finished = await jobs.complete_job(
                    conn, job, embedder=res.embedder.name, dimension=res.embedder.dimension
                )
        logger.info("planned %d files in %d batches (%d skipped)", len(scan.files), len(batches), skipped)
        if batches:
            # A second transaction: the ledger rows must be committed before their messages go out.
            async with res.engine.begin() as conn:
                await conn.execute(text("SELECT 1 FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job})
                await dispatch_window(conn, job, res.settings.batches_in_flight)
        if finished:
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)
