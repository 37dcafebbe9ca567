"""``plan_job``: scan the repository, find what changed, fix the work in the ledger, dispatch the first batches.

Re-indexing is incremental. The planner hashes every indexable file (sha256 of its bytes, the value
``files.content_hash`` holds) and compares with the repository's rows in ``files``:

- unchanged files are not read again by anyone: no chunking, embedding or writing (``files_unchanged``);
- new and modified files go into ledger batches and are re-indexed, their old chunks replaced;
- indexed files no longer on disk, or now ignored or skipped, leave the index in the plan's own
  transaction (``files_removed``);
- when the repository was indexed with another embedder (name or dimension), its old vectors are
  not comparable with new ones: every file row is dropped in the plan's transaction and every file
  is re-indexed.

``files_total`` is the number of files this job sends through the pipeline (new and modified, or
all of them after an embedder change); the repository's indexable files are
``files_total + files_unchanged``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from actors import metrics
from actors.broker import stage_actor, worker_resources
from actors.dispatch import dispatch_window, job_ended
from actors.embedders import configured_name
from actors.messages import PLAN_QUEUE, STAGE_RETRIES
from actors.pipeline import NotIndexableError, read_inside
from actors.resources import Resources
from actors.scanning import (
    RootRejectedError,
    ScannedFile,
    checked_root,
    kept_unreadable,
    looks_binary,
    scan_repository,
    unreadable_note,
)
from models import jobs, ledger, lifecycle, repositories
from models.lifecycle import SCAN_SHARE
from models.logs import log_context

logger = logging.getLogger(__name__)

#: Files hashed per worker-thread call; the progress message moves and cancellation is seen between calls.
HASH_SLICE = 2000


@dataclass(frozen=True, slots=True)
class Fingerprint:
    path: str
    size: int
    digest: str | None  # sha256 hex of the bytes; None when the file could not be read now


def fingerprint_files(
    root: Path,
    files: Sequence[ScannedFile],
    *,
    max_file_bytes: int,
    indexed: Mapping[str, repositories.IndexedFile] | None = None,
) -> tuple[list[Fingerprint], dict[str, int]]:
    """Read and hash ``files``; returns the indexable ones and skip counts by reason.

    A file that ``indexed`` proves unchanged by its size and mtime
    (:func:`models.repositories.read_as_it_is`) takes the stored hash unread: a re-index after one
    save then reads one file, not the whole tree (``CODEBASE_MCP_TRUST_MTIME=false`` reads all).

    Read with the chunk stage's guarded reader (:func:`actors.pipeline.read_inside`): the tree may
    have changed since the scan, and a FIFO must not block this thread nor a symlink to a device be
    read without limit. Files found binary by content or grown past ``max_file_bytes`` since the
    scan are skipped here, so they are never batched (and leave the index if they were in it). A
    file deleted since the scan is simply absent. A file that must not be read, or any other read
    error, keeps the file with no digest: the chunk stage reads it again and reports why.
    """
    found: list[Fingerprint] = []
    skipped: dict[str, int] = {}
    real_root = root.resolve()
    for item in files:
        known = indexed.get(item.path) if indexed is not None and item.mtime is not None else None
        if (
            known is not None
            and item.mtime is not None
            and repositories.read_as_it_is(known, size=item.size, mtime=item.mtime)
        ):
            found.append(Fingerprint(item.path, item.size, known.content_hash))
            continue
        try:
            raw = read_inside(real_root, root / item.path, max_file_bytes)
        except FileNotFoundError:
            continue
        except (NotIndexableError, OSError):
            found.append(Fingerprint(item.path, item.size, None))
            continue
        reason = "too large" if len(raw) > max_file_bytes else "binary" if looks_binary(raw) else None
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        found.append(Fingerprint(item.path, len(raw), hashlib.sha256(raw).hexdigest()))
    return found, skipped


async def _set_scan_progress(res: Resources, job: uuid.UUID, message: str, percentage: int) -> bool:
    """Update an unplanned running job's scan progress; False when the job is no longer running."""
    async with res.engine.begin() as conn:
        return await jobs.set_scan_progress(conn, job, message, percentage)


async def _fingerprint(
    res: Resources, job: uuid.UUID, repository_id: uuid.UUID, root: Path, files: list[ScannedFile]
) -> tuple[list[Fingerprint], dict[str, int]] | None:
    """Hash every scanned file off the event loop, in slices; None when the job stopped meanwhile."""
    found: list[Fingerprint] = []
    skipped: dict[str, int] = {}
    indexed: dict[str, repositories.IndexedFile] | None = None
    if res.settings.trust_mtime:
        async with res.engine.connect() as conn:
            indexed = await repositories.indexed_by_path(conn, repository_id)
    for start in range(0, len(files), HASH_SLICE):
        if start and not await _set_scan_progress(
            res,
            job,
            lifecycle.scan_hashing_message(start, len(files)),
            lifecycle.scan_percentage(start, len(files)),
        ):
            return None
        part, part_skipped = await asyncio.to_thread(
            functools.partial(
                fingerprint_files,
                root,
                files[start : start + HASH_SLICE],
                max_file_bytes=res.settings.max_file_bytes,
                indexed=indexed,
            )
        )
        found.extend(part)
        for reason, count in part_skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    return found, skipped


def _describe_embedder(name: str | None, dimension: int | None, other_dimension: int | None) -> str:
    return f"{name} ({dimension} dimensions)" if dimension != other_dimension else str(name)


@stage_actor(queue_name=PLAN_QUEUE, time_limit=1_800_000, **STAGE_RETRIES)
async def plan_job(job_id: str) -> None:
    """Plan a running job once. A repeated message (redelivery, resume) only tops up the window."""
    res = await worker_resources().get()
    job = uuid.UUID(job_id)
    with log_context(job_id=job_id):
        async with res.engine.connect() as conn:
            row = await jobs.find_job(conn, job)
        if row is None or row["status"] != jobs.JobStatus.RUNNING:
            return
        if row["planned_at"] is not None:
            async with res.engine.begin() as conn:
                await dispatch_window(conn, job, res.settings.batches_in_flight)
            return
        try:
            root = checked_root(row["repo_path"], res.settings.allowed_roots)
        except RootRejectedError as error:
            async with res.engine.begin() as conn:
                finished = await jobs.finish_job(conn, job, jobs.Failed(str(error)))
            await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)
            return
        logger.info("scanning %s", root)
        if not await _set_scan_progress(res, job, lifecycle.scan_listing_message(root), 0):
            return
        scan = await asyncio.to_thread(scan_repository, root, max_file_bytes=res.settings.max_file_bytes)
        hashed = await _fingerprint(res, job, row["repository_id"], root, scan.files)
        if hashed is None:
            return
        found, hash_skipped = hashed
        skipped_by_reason = dict(scan.skipped)
        for reason, count in hash_skipped.items():
            skipped_by_reason[reason] = skipped_by_reason.get(reason, 0) + count
        async with res.engine.begin() as conn:
            planned = await _write_plan(conn, res, job, found, skipped_by_reason, unreadable=scan.unreadable)
        if planned is None:
            return
        batches, finished = planned
        metrics.files_skipped_at_plan(sum(skipped_by_reason.values()))
        if batches:
            # A second transaction: the ledger rows must be committed before their messages go out.
            async with res.engine.begin() as conn:
                await jobs.lock_job(conn, job)
                await dispatch_window(conn, job, res.settings.batches_in_flight)
        await job_ended(res.engine, res.settings.max_concurrent_jobs, finished)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a job's plan does to the index and the ledger; decided by :func:`decide_plan`, no I/O."""

    diff: ledger.IndexDiff
    #: The embedder changed: every old file row goes (old and new vectors are not comparable).
    remove_all: bool
    change_note: str
    batches: list[ledger.PlannedBatch]
    skipped_by_reason: dict[str, int]
    #: Says which directories could not be listed and how many indexed files under them were kept.
    unreadable_note: str = ""

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    @property
    def message(self) -> str:
        return lifecycle.planned_message(
            changed=len(self.diff.changed),
            batches=len(self.batches),
            unchanged=self.diff.unchanged,
            removed=len(self.diff.removed),
            skipped=self.skipped,
            note="; ".join(part for part in (self.change_note, self.unreadable_note) if part),
        )

    @property
    def event(self) -> dict[str, Any]:
        return {
            "files": len(self.diff.changed),
            "batches": len(self.batches),
            "unchanged": self.diff.unchanged,
            "removed": len(self.diff.removed),
            "skipped": self.skipped_by_reason,
            "full_reindex": self.remove_all,
        }


def decide_plan(
    found: Sequence[Fingerprint],
    skipped_by_reason: Mapping[str, int],
    *,
    indexed: Mapping[str, str],
    recorded_embedder: str | None,
    recorded_dimension: int | None,
    embedder: str,
    dimension: int,
    max_files: int,
    max_bytes: int,
    unreadable: Mapping[str, str] | None = None,
) -> Plan:
    """Compare the hashed files with the index (``path -> content_hash``) and the repository's
    recorded embedder with the configured one; split what must be (re)indexed into batches.

    ``unreadable`` maps the directories the scan could not list to the reason: the indexed files
    under them are kept, never removed (not seen is not gone)."""
    diff = ledger.diff_against_index({item.path: item.digest for item in found}, indexed)
    kept_note = ""
    if unreadable:
        kept = set(kept_unreadable(diff.removed, unreadable))
        diff = ledger.IndexDiff(diff.changed, diff.unchanged, [path for path in diff.removed if path not in kept])
        kept_note = unreadable_note(dict(unreadable), len(kept))
    # A repository never planned by this version has no embedder recorded: its chunks came from the
    # embedder configured then, which is taken to be this one.
    embedder_changed = (
        bool(indexed)
        and recorded_embedder is not None
        and (recorded_embedder != embedder or recorded_dimension != dimension)
    )
    change_note = ""
    if embedder_changed:
        change_note = (
            f"embedder changed from {_describe_embedder(recorded_embedder, recorded_dimension, dimension)} "
            f"to {_describe_embedder(embedder, dimension, recorded_dimension)}: full re-index"
        )
        diff = ledger.IndexDiff([item.path for item in found], 0, diff.removed)
    sizes = {item.path: item.size for item in found}
    batches = ledger.split_into_batches(
        [(path, sizes[path]) for path in diff.changed], max_files=max_files, max_bytes=max_bytes
    )
    return Plan(diff, embedder_changed, change_note, batches, dict(skipped_by_reason), kept_note)


async def _write_plan(
    conn: AsyncConnection,
    res: Resources,
    job: uuid.UUID,
    found: list[Fingerprint],
    skipped_by_reason: dict[str, int],
    *,
    unreadable: dict[str, str] | None = None,
) -> tuple[int, jobs.Finished] | None:
    """Decide the plan against the index, then write it: removals, batches, the job's figures.

    Returns (batches, what finishing did: ended only when there was nothing to index). None when
    the job stopped running or another delivery planned it first.
    """
    locked = await jobs.lock_job(conn, job)
    if locked is None or locked["status"] != jobs.JobStatus.RUNNING or locked["planned_at"] is not None:
        return None
    repository_id = locked["repository_id"]
    repository = (
        await conn.execute(
            text("SELECT embedder, dimension FROM repositories WHERE id = :id FOR UPDATE"), {"id": repository_id}
        )
    ).one()
    embedder, dimension = configured_name(res.settings), res.embedder.dimension
    plan = decide_plan(
        found,
        skipped_by_reason,
        indexed=await ledger.indexed_files(conn, repository_id),
        recorded_embedder=repository.embedder,
        recorded_dimension=repository.dimension,
        embedder=embedder,
        dimension=dimension,
        max_files=res.settings.batch_size,
        max_bytes=res.settings.batch_max_bytes,
        unreadable=unreadable,
    )
    if plan.remove_all:
        # Old and new vectors are not comparable: drop every old row now rather than mix them in search.
        await ledger.remove_files(conn, repository_id, None)
        logger.warning("%s", plan.change_note)
        await jobs.add_event(
            conn,
            job,
            "embedder_changed",
            {"from": repository.embedder, "to": embedder, "message": plan.change_note},
        )
    else:
        await ledger.remove_files(conn, repository_id, plan.diff.removed)
    await conn.execute(
        text("UPDATE repositories SET embedder = :embedder, dimension = :dimension WHERE id = :id"),
        {"id": repository_id, "embedder": embedder, "dimension": dimension},
    )
    if plan.unreadable_note:
        logger.warning("%s", plan.unreadable_note)
        await jobs.add_event(conn, job, "scan_incomplete", {"unreadable": unreadable, "message": plan.unreadable_note})
    await ledger.write_plan(conn, job, plan.batches)
    await jobs.mark_planned(
        conn,
        job,
        files_total=len(plan.diff.changed),
        batches_total=len(plan.batches),
        files_skipped=plan.skipped,
        files_unchanged=plan.diff.unchanged,
        files_removed=len(plan.diff.removed),
        percentage=SCAN_SHARE,
        message=plan.message,
        event=plan.event,
    )
    logger.info(
        "planned %d files in %d batches (%d unchanged, %d removed, %d skipped)",
        len(plan.diff.changed),
        len(plan.batches),
        plan.diff.unchanged,
        len(plan.diff.removed),
        plan.skipped,
    )
    finished = jobs.Finished(jobs.JobStatus.COMPLETED, ended=False)
    if not plan.batches:
        finished = await jobs.finish_job(conn, job, jobs.Completed(embedder, dimension))
    return len(plan.batches), finished
