"""``record_batch``: the one place that advances a job from its ledger.

Records a written batch, adds its counters to the job, moves progress (never backwards), tops up
the job's in-flight window, finishes the job after its last batch and then starts the next
pending job. Rows are locked job-first, then batch, like every other writer, so it never
deadlocks with the stages.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
from sqlalchemy import text

from actors import metrics
from actors.broker import resources
from actors.dispatch import dispatch_window, promote_and_plan
from actors.messages import COORDINATE_QUEUE, STAGE_RETRIES
from actors.planning import SCAN_SHARE
from models import jobs, ledger
from models.database_watch import disk_full_note
from models.logs import failure_cause, log_context

logger = logging.getLogger(__name__)


def describe_progress(
    counts: dict[str, int], *, files_done: int, files_total: int, files_indexed: int, chunks: int, unchanged: int = 0
) -> tuple[str, str]:
    """The phase (the pipeline stage most in-flight batches wait for) and a message naming it.

    ``files_total`` counts the files this job (re)indexes; ``unchanged`` the ones it skipped.
    """
    stages = {"chunking": 0, "embedding": 0, "writing": 0}
    for state, stage in ledger.IN_FLIGHT_STAGE.items():
        stages[stage] += counts.get(state, 0)
    # Ties go to the later stage: work further along is what finishes the job.
    phase = max(reversed(list(stages)), key=lambda stage: stages[stage]) if any(stages.values()) else "chunking"
    kept = f", {unchanged:,} unchanged" if unchanged else ""
    message = (
        f"{phase}: {files_done:,}/{files_total:,} files processed, {files_indexed:,} indexed, {chunks:,} chunks{kept} "
        f"(in flight: {stages['chunking']} chunking, {stages['embedding']} embedding, {stages['writing']} writing)"
    )
    return phase, message


@dramatiq.actor(
    queue_name=COORDINATE_QUEUE, time_limit=300_000, **{**STAGE_RETRIES, "max_retries": 20, "min_backoff": 500}
)
@metrics.timed_stage("record")
async def record_batch(job_id: str, batch_no: int, token: str) -> None:
    res = await resources.get()
    job = uuid.UUID(job_id)
    finished = False
    with log_context(job_id=job_id, batch=batch_no, stage="record"):
        async with res.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, files_total, batches_total, batches_done, files_indexed, files_skipped, "
                        "files_failed, files_unchanged, chunks_created, progress_percentage FROM indexing_jobs "
                        "WHERE id = :id FOR UPDATE"
                    ),
                    {"id": job},
                )
            ).first()
            if row is None:
                return
            recorded = await ledger.take_for_recording(conn, job, batch_no, uuid.UUID(token))
            if recorded is None:
                logger.debug("batch already recorded or message stale")
                return
            batches_done = row.batches_done + 1
            files_indexed = row.files_indexed + recorded.files_indexed
            chunks = row.chunks_created + recorded.chunks_created
            await conn.execute(
                text(
                    "UPDATE indexing_jobs SET batches_done = batches_done + 1, "
                    "files_indexed = files_indexed + :indexed, files_skipped = files_skipped + :skipped, "
                    "files_failed = files_failed + :failed, chunks_created = chunks_created + :chunks, "
                    "updated_at = now() WHERE id = :id"
                ),
                {
                    "id": job,
                    "indexed": recorded.files_indexed,
                    "skipped": recorded.files_skipped,
                    "failed": recorded.files_failed,
                    "chunks": recorded.chunks_created,
                },
            )
            metrics.batch_recorded(recorded)  # counted once this call returns, i.e. after the commit
            if row.status not in jobs.LIVE_STATUSES:
                # Cancelled or failed: the counters still tell the truth about what is stored.
                return
            if batches_done >= (row.batches_total or 0):
                finished = await jobs.complete_job(
                    conn, job, embedder=res.embedder.name, dimension=res.embedder.dimension
                )
            else:
                counts = await ledger.stage_counts(conn, job)
                files_done = await conn.scalar(
                    text(
                        "SELECT coalesce(sum(file_count), 0) FROM index_batches "
                        "WHERE job_id = :id AND state = 'recorded'"
                    ),
                    {"id": job},
                )
                total = max(int(row.files_total or 0), 1)
                percentage = min(99, SCAN_SHARE + (100 - SCAN_SHARE) * int(files_done or 0) // total)
                phase, message = describe_progress(
                    counts,
                    files_done=int(files_done or 0),
                    files_total=int(row.files_total or 0),
                    files_indexed=files_indexed,
                    chunks=chunks,
                    unchanged=int(row.files_unchanged or 0),
                )
                await conn.execute(
                    text(
                        # A blocked job keeps saying what it waits for.
                        "UPDATE indexing_jobs SET phase = :phase, progress_message = CASE WHEN status = 'blocked' "
                        "THEN progress_message ELSE :message END, "
                        "progress_percentage = GREATEST(progress_percentage, :pct) WHERE id = :id"
                    ),
                    {"id": job, "phase": phase, "message": message, "pct": percentage},
                )
                if percentage // 10 > row.progress_percentage // 10:
                    await jobs.add_event(
                        conn, job, "progress", {"percentage": percentage, "batches_done": batches_done}
                    )
                await dispatch_window(conn, job, res.settings.batches_in_flight)
        if finished:
            metrics.job_finished("completed")
            logger.info("job completed: %d files, %d chunks", files_indexed, chunks)
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)


@dramatiq.actor(queue_name=COORDINATE_QUEUE, max_retries=20, min_backoff=500, max_backoff=30000)
async def stage_failed(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """A stage exhausted its retries: fail its job with the stage, batch and last error, never hang."""
    res = await resources.get()
    args = message.get("args") or []
    if not args:
        return
    job = uuid.UUID(str(args[0]))
    batch = f" of batch {args[1]}" if len(args) > 1 else ""
    trace = str((message.get("options") or {}).get("traceback") or "").strip()
    cause = failure_cause(trace) if trace else "unknown error"
    reason = f"{message.get('actor_name')}{batch} failed {retry_info.get('retries', '?')} times: {cause}"
    if note := disk_full_note(res.settings):
        reason += f" ({note})"
    with log_context(job_id=str(job), stage="failure"):
        logger.error("giving up: %s", reason)
        async with res.engine.begin() as conn:
            failed = await jobs.fail_job(conn, job, reason)
        if failed:
            metrics.job_finished("failed")
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)
