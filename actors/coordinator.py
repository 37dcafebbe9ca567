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

from actors import metrics
from actors.broker import stage_actor, worker_resources
from actors.dispatch import dispatch_window, job_ended
from actors.messages import COORDINATE_QUEUE, STAGE_RETRIES
from models import jobs, ledger, lifecycle
from models.database_watch import disk_full_note
from models.logs import failure_cause, log_context

logger = logging.getLogger(__name__)


@stage_actor(
    queue_name=COORDINATE_QUEUE, time_limit=300_000, **{**STAGE_RETRIES, "max_retries": 20, "min_backoff": 500}
)
@metrics.timed_stage("record")
async def record_batch(job_id: str, batch_no: int, token: str) -> None:
    res = await worker_resources().get()
    job = uuid.UUID(job_id)
    finished = jobs.Finished(jobs.JobStatus.COMPLETED, ended=False)
    with log_context(job_id=job_id, batch=batch_no, stage="record"):
        async with res.engine.begin() as conn:
            row = await jobs.lock_job(conn, job)
            if row is None:
                return
            recorded = await ledger.take_for_recording(conn, job, batch_no, uuid.UUID(token))
            if recorded is None:
                logger.debug("batch already recorded or message stale")
                return
            tally = jobs.tally(row)
            await jobs.add_batch_counts(
                conn,
                job,
                indexed=recorded.files_indexed,
                skipped=recorded.files_skipped,
                failed=recorded.files_failed,
                chunks=recorded.chunks_created,
            )
            metrics.batch_recorded(recorded)  # counted once this call returns, i.e. after the commit
            if tally.status not in jobs.LIVE_STATUSES:
                # Cancelled or failed: the counters still tell the truth about what is stored.
                return
            if lifecycle.last_batch(tally):
                finished = await jobs.finish_job(conn, job, jobs.Completed(res.embedder.name, res.embedder.dimension))
            else:
                progress = lifecycle.progress_after_batch(
                    tally,
                    files_indexed=recorded.files_indexed,
                    chunks=recorded.chunks_created,
                    counts=await ledger.stage_counts(conn, job),
                    files_done=await ledger.files_recorded(conn, job),
                )
                await jobs.record_progress(conn, job, progress)
                await dispatch_window(conn, job, res.settings.batches_in_flight)
        if finished.ended:
            logger.info(
                "job completed: %d files, %d chunks",
                tally.files_indexed + recorded.files_indexed,
                tally.chunks_created + recorded.chunks_created,
            )
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
