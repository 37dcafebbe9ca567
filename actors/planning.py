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
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from actors import metrics
from actors.broker import resources
from actors.dispatch import dispatch_window, promote_and_plan
from actors.embedders import configured_name
from actors.messages import PLAN_QUEUE, STAGE_RETRIES
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
from models import jobs, ledger
from models.logs import log_context

logger = logging.getLogger(__name__)

#: Scanning and hashing are given the first few percent of the progress bar; batches fill the rest.
SCAN_SHARE = 5
#: Files hashed per worker-thread call; the progress message moves and cancellation is seen between calls.
HASH_SLICE = 2000


@dataclass(frozen=True, slots=True)
class Fingerprint:
    path: str
    size: int
    digest: str | None  # sha256 hex of the bytes; None when the file could not be read now


def fingerprint_files(
    root: Path, files: Sequence[ScannedFile], *, max_file_bytes: int
) -> tuple[list[Fingerprint], dict[str, int]]:
    """Read and hash ``files``; returns the indexable ones and skip counts by reason.

    Files found binary by content or grown past ``max_file_bytes`` since the scan are skipped here,
    so they are never batched (and leave the index if they were in it). A file deleted since the
    scan is simply absent. Any other read error keeps the file with no digest: the chunk stage
    reads it again and reports the error.
    """
    found: list[Fingerprint] = []
    skipped: dict[str, int] = {}
    for item in files:
        try:
            raw = (root / item.path).read_bytes()
        except FileNotFoundError:
            continue
        except OSError:
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
        result = await conn.execute(
            text(
                "UPDATE indexing_jobs SET phase = 'scanning', updated_at = now(), progress_message = :message, "
                "progress_percentage = GREATEST(progress_percentage, :pct) "
                "WHERE id = :id AND status = 'running' AND planned_at IS NULL"
            ),
            {"id": job, "message": message, "pct": percentage},
        )
    return bool(result.rowcount)


async def _fingerprint(
    res: Resources, job: uuid.UUID, root: Path, files: list[ScannedFile]
) -> tuple[list[Fingerprint], dict[str, int]] | None:
    """Hash every scanned file off the event loop, in slices; None when the job stopped meanwhile."""
    found: list[Fingerprint] = []
    skipped: dict[str, int] = {}
    for start in range(0, len(files), HASH_SLICE):
        if start and not await _set_scan_progress(
            res,
            job,
            f"scanning: hashed {start:,}/{len(files):,} files to find what changed",
            (SCAN_SHARE - 1) * start // len(files),
        ):
            return None
        part, part_skipped = await asyncio.to_thread(
            fingerprint_files, root, files[start : start + HASH_SLICE], max_file_bytes=res.settings.max_file_bytes
        )
        found.extend(part)
        for reason, count in part_skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    return found, skipped


def _describe_embedder(name: str | None, dimension: int | None, other_dimension: int) -> str:
    return f"{name} ({dimension} dimensions)" if dimension != other_dimension else str(name)


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
        try:
            root = checked_root(row.repo_path, res.settings.allowed_roots)
        except RootRejectedError as error:
            async with res.engine.begin() as conn:
                await jobs.fail_job(conn, job, str(error))
            metrics.job_finished("failed")
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)
            return
        logger.info("scanning %s", root)
        if not await _set_scan_progress(res, job, f"scanning: listing files under {root}", 0):
            return
        scan = await asyncio.to_thread(scan_repository, root, max_file_bytes=res.settings.max_file_bytes)
        hashed = await _fingerprint(res, job, root, scan.files)
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
        if finished:
            metrics.job_finished("completed")
        if batches:
            # A second transaction: the ledger rows must be committed before their messages go out.
            async with res.engine.begin() as conn:
                await conn.execute(text("SELECT 1 FROM indexing_jobs WHERE id = :id FOR UPDATE"), {"id": job})
                await dispatch_window(conn, job, res.settings.batches_in_flight)
        if finished:
            await promote_and_plan(res.engine, res.settings.max_concurrent_jobs)


async def _write_plan(
    conn: AsyncConnection,
    res: Resources,
    job: uuid.UUID,
    found: list[Fingerprint],
    skipped_by_reason: dict[str, int],
    *,
    unreadable: dict[str, str] | None = None,
) -> tuple[int, bool] | None:
    """Compare with the index, remove what left, write the batches; returns (batches, job finished).

    None when the job stopped running or another delivery planned it first.
    """
    locked = (
        await conn.execute(
            text("SELECT status, planned_at, repository_id FROM indexing_jobs WHERE id = :id FOR UPDATE"),
            {"id": job},
        )
    ).first()
    if locked is None or locked.status != "running" or locked.planned_at is not None:
        return None
    repository_id = locked.repository_id
    repository = (
        await conn.execute(
            text("SELECT embedder, dimension FROM repositories WHERE id = :id FOR UPDATE"), {"id": repository_id}
        )
    ).one()
    embedder, dimension = configured_name(res.settings), res.embedder.dimension
    indexed = await ledger.indexed_files(conn, repository_id)
    diff = ledger.diff_against_index({item.path: item.digest for item in found}, indexed)
    unreadable_message = ""
    if unreadable:
        # Not seen is not gone: what the index holds under a directory that could not be listed stays.
        kept = set(kept_unreadable(diff.removed, unreadable))
        diff = ledger.IndexDiff(diff.changed, diff.unchanged, [path for path in diff.removed if path not in kept])
        unreadable_message = unreadable_note(unreadable, len(kept))
        logger.warning("%s", unreadable_message)
        await jobs.add_event(conn, job, "scan_incomplete", {"unreadable": unreadable, "message": unreadable_message})
    # A repository never planned by this version has no embedder recorded: its chunks came from the
    # embedder configured then, which is taken to be this one.
    embedder_changed = (
        bool(indexed)
        and repository.embedder is not None
        and (repository.embedder != embedder or repository.dimension != dimension)
    )
    change_note = ""
    if embedder_changed:
        change_note = (
            f"embedder changed from {_describe_embedder(repository.embedder, repository.dimension, dimension)} "
            f"to {_describe_embedder(embedder, dimension, repository.dimension)}: full re-index"
        )
        # Old and new vectors are not comparable: drop every old row now rather than mix them in search.
        await ledger.remove_files(conn, repository_id, None)
        diff = ledger.IndexDiff([item.path for item in found], 0, diff.removed)
        logger.warning("%s", change_note)
        await jobs.add_event(
            conn, job, "embedder_changed", {"from": repository.embedder, "to": embedder, "message": change_note}
        )
    else:
        await ledger.remove_files(conn, repository_id, diff.removed)
    await conn.execute(
        text("UPDATE repositories SET embedder = :embedder, dimension = :dimension WHERE id = :id"),
        {"id": repository_id, "embedder": embedder, "dimension": dimension},
    )
    sizes = {item.path: item.size for item in found}
    batches = ledger.split_into_batches(
        [(path, sizes[path]) for path in diff.changed],
        max_files=res.settings.batch_size,
        max_bytes=res.settings.batch_max_bytes,
    )
    await ledger.write_plan(conn, job, batches)
    skipped = sum(skipped_by_reason.values())
    message = plan_message(
        changed=len(diff.changed),
        batches=len(batches),
        unchanged=diff.unchanged,
        removed=len(diff.removed),
        skipped=skipped,
        note="; ".join(part for part in (change_note, unreadable_message) if part),
    )
    await conn.execute(
        text(
            "UPDATE indexing_jobs SET planned_at = now(), updated_at = now(), files_total = :total, "
            "batches_total = :batches, files_skipped = :skipped, files_unchanged = :unchanged, "
            "files_removed = :removed, phase = 'chunking', "
            "progress_percentage = GREATEST(progress_percentage, :pct), progress_message = :message "
            "WHERE id = :id"
        ),
        {
            "id": job,
            "total": len(diff.changed),
            "batches": len(batches),
            "skipped": skipped,
            "unchanged": diff.unchanged,
            "removed": len(diff.removed),
            "pct": SCAN_SHARE,
            "message": message,
        },
    )
    await jobs.add_event(
        conn,
        job,
        "planned",
        {
            "files": len(diff.changed),
            "batches": len(batches),
            "unchanged": diff.unchanged,
            "removed": len(diff.removed),
            "skipped": skipped_by_reason,
            "full_reindex": embedder_changed,
        },
    )
    logger.info(
        "planned %d files in %d batches (%d unchanged, %d removed, %d skipped)",
        len(diff.changed),
        len(batches),
        diff.unchanged,
        len(diff.removed),
        skipped,
    )
    finished = False
    if not batches:
        finished = await jobs.complete_job(conn, job, embedder=embedder, dimension=dimension)
    return len(batches), finished


def plan_message(*, changed: int, batches: int, unchanged: int, removed: int, skipped: int, note: str = "") -> str:
    """The progress message once the plan is written, e.g. ``chunking: 12 files in 1 batch to index, ...``."""
    parts = [
        f"{changed:,} file{'s' if changed != 1 else ''} in {batches:,} batch{'es' if batches != 1 else ''} to index"
    ]
    parts += [f"{unchanged:,} unchanged"] if unchanged else []
    parts += [f"{removed:,} removed"] if removed else []
    parts += [f"{skipped:,} skipped"] if skipped else []
    return "chunking: " + (f"{note}: " if note else "") + ", ".join(parts)
