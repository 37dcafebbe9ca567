"""``record_batch``: the one place that advances a job from its ledger.

Records a batch twice: its text (adds its counters to the job, sends it to the embed stage, tops
up the job's text window) and its vectors (finishes the job after its last batch and then starts
the next pending job); progress moves each time (never backwards). Rows are locked job-first,
then batch, like every other writer, so it never deadlocks with the stages.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from actors import metrics
from actors.broker import stage_actor, worker_resources
from actors.dispatch import dispatch_window, job_ended, publish
from actors.messages import COORDINATE_QUEUE, STAGE_RETRIES, embed_message
from models import jobs, ledger, lifecycle
from models.database_watch import disk_full_note
from models.logs import failure_cause, log_context

logger = logging.getLogger(__name__)


@stage_actor(
    queue_name=COORDINATE_QUEUE, time_limit=300_000, **{**STAGE_RETRIES, "max_retries": 20, "min_backoff": 500}
)
@metrics.timed_stage("record")
async def record_batch(job_id: str, batch_no: int, token: str) -> None:
    """Record a batch's text (then send it to the embed stage and top up the text window) or its
    vectors (then, after the last batch, complete the job)."""
    res = await worker_resources().get()
    job = uuid.UUID(job_id)
    finished = jobs.Finished(jobs.JobStatus.COMPLETED, ended=False)
    with log_context(job_id=job_id, batch=batch_no, stage="record"):
        async with res.engine.begin() as conn:
            row = await jobs.lock_job(conn, job)
            if row is None:
                return

            async def send_embed(next_token: uuid.UUID) -> None:
                await publish(embed_message(job, batch_no, next_token))

            recorded = await ledger.take_for_recording(conn, job, batch_no, uuid.UUID(token), send_embed=send_embed)
            if recorded is None:
                logger.debug("batch already recorded or message stale")
                return
            tally = jobs.tally(row)
            if recorded.phase == "text":
                await jobs.add_text_counts(
                    conn,
                    job,
                    files=recorded.file_count,
                    indexed=recorded.files_indexed,
                    skipped=recorded.files_skipped,
                    failed=recorded.files_failed,
                    chunks=recorded.chunks_created,
                    chunks_embedded=recorded.chunks_embedded,
                )
                metrics.batch_recorded(recorded)  # counted once this call returns, i.e. after the commit
            else:
                await jobs.count_batch_done(conn, job)
            if tally.status not in jobs.LIVE_STATUSES:
                # Cancelled or failed: the counters still tell the truth about what is stored.
                return
            if recorded.phase == "vectors" and lifecycle.last_batch(tally):
                finished = await jobs.finish_job(conn, job, jobs.Completed(res.embedder.name, res.embedder.dimension))
            else:
                await jobs.record_current_progress(conn, job, before=tally.progress_percentage)
                if recorded.phase == "text":
                    await dispatch_window(conn, job, res.settings.batches_in_flight)
        if finished.ended:
            logger.info("job completed: %d files, %d chunks", tally.files_indexed, tally.chunks_created)
        await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)


@stage_actor(queue_name=COORDINATE_QUEUE, max_retries=20, min_backoff=500, max_backoff=30000)
async def stage_failed(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """A stage exhausted its retries: fail its job with the stage, batch and last error, never hang."""
    res = await worker_resources().get()
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
            finished = await jobs.finish_job(conn, job, jobs.Failed(reason))
        await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)
