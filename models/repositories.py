"""Indexed repositories: lookup by name or path, listing with counts, and removal of an index.

Every function takes an open ``AsyncConnection``; the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models import jobs
from models.lifecycle import ACTIVE_STATUSES


class RepositoryBusyError(RuntimeError):
    """A job on the repository is pending, running or blocked: its index is being written."""


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    id: uuid.UUID
    name: str
    path: str
    files: int
    chunks: int
    languages: list[str]
    created_at: datetime
    last_indexed_at: datetime | None
    embedder: str | None
    dimension: int | None
    active_job_id: uuid.UUID | None
    active_job_status: str | None
    watched: bool = False
    watch_caught_up_at: datetime | None = None
    watch_error: str | None = None


@dataclass(frozen=True, slots=True)
class Deleted:
    files: int
    chunks: int
    jobs: int


_LISTING = (
    "SELECT r.id, r.name, r.path, r.created_at, r.last_indexed_at, r.embedder, r.dimension,"
    " COALESCE(fc.files, 0) AS files, COALESCE(fc.languages, ARRAY[]::text[]) AS languages,"
    " COALESCE(cc.chunks, 0) AS chunks, aj.id AS active_job_id, aj.status AS active_job_status,"
    " r.watched, r.watch_caught_up_at, r.watch_error"
    " FROM repositories r"
    " LEFT JOIN LATERAL (SELECT count(*) AS files, array_agg(DISTINCT language ORDER BY language) AS languages"
    "  FROM files WHERE repository_id = r.id) fc ON true"
    " LEFT JOIN LATERAL (SELECT count(*) AS chunks FROM chunks WHERE repository_id = r.id) cc ON true"
    " LEFT JOIN LATERAL (SELECT id, status FROM indexing_jobs"
    "  WHERE repository_id = r.id AND status = ANY(:active) ORDER BY created_at LIMIT 1) aj ON true"
)


def _row(row: Any) -> RepositoryRow:
    return RepositoryRow(
        id=row.id,
        name=row.name,
        path=row.path,
        files=int(row.files),
        chunks=int(row.chunks),
        languages=[language for language in row.languages if language],
        created_at=row.created_at,
        last_indexed_at=row.last_indexed_at,
        embedder=row.embedder,
        dimension=row.dimension,
        active_job_id=row.active_job_id,
        active_job_status=row.active_job_status,
        watched=row.watched,
        watch_caught_up_at=row.watch_caught_up_at,
        watch_error=row.watch_error,
    )


async def list_repositories(conn: AsyncConnection) -> list[RepositoryRow]:
    """Every repository with its file and chunk counts (counted now, not cached), by name then path."""
    rows = await conn.execute(text(_LISTING + " ORDER BY r.name, r.path"), {"active": list(ACTIVE_STATUSES)})
    return [_row(row) for row in rows]


async def find_repositories(conn: AsyncConnection, reference: str, resolved_path: str | None) -> list[RepositoryRow]:
    """The repository whose path is ``reference`` or ``resolved_path``; else those named ``reference``.

    A path names one repository; a name may name several (two checkouts called ``app``). A path
    match wins over names: names are chosen by clients, so a repository named like another one's
    path must not capture (or block the deletion of) that path.
    """
    rows = await conn.execute(
        text(
            _LISTING + " WHERE r.path = :ref OR r.path = :resolved OR (r.name = :ref AND NOT EXISTS "
            "(SELECT 1 FROM repositories p WHERE p.path = :ref OR p.path = :resolved)) ORDER BY r.path"
        ),
        {"active": list(ACTIVE_STATUSES), "ref": reference, "resolved": resolved_path},
    )
    return [_row(row) for row in rows]


async def known_names(conn: AsyncConnection, limit: int = 20) -> list[str]:
    """``name (path)`` of up to ``limit`` repositories, for error messages."""
    rows = await conn.execute(text("SELECT name, path FROM repositories ORDER BY name, path LIMIT :n"), {"n": limit})
    return [f"{row.name} ({row.path})" for row in rows]


async def indexed_languages(conn: AsyncConnection, repository_ids: list[uuid.UUID] | None = None) -> list[str]:
    """Languages that have at least one indexed file (in the given repositories, or anywhere)."""
    rows = await conn.execute(
        text(
            "SELECT DISTINCT language FROM files"
            " WHERE CAST(:ids AS uuid[]) IS NULL OR repository_id = ANY(:ids) ORDER BY language"
        ),
        {"ids": repository_ids},
    )
    return [row.language for row in rows]


async def delete_repository(conn: AsyncConnection, repository_id: uuid.UUID) -> Deleted:
    """Remove the repository's chunks, files, jobs and row.

    Raises:
        RepositoryBusyError: a job on it is pending, running or blocked (nothing is deleted).
    """
    # The admission lock: no job can be admitted for this repository between the check and the delete.
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": jobs._ADMISSION_LOCK_KEY})
    active = (
        await conn.execute(
            text(
                "SELECT id, status FROM indexing_jobs WHERE repository_id = :id AND status = ANY(:active)"
                " ORDER BY created_at LIMIT 1"
            ),
            {"id": repository_id, "active": list(ACTIVE_STATUSES)},
        )
    ).first()
    if active is not None:
        raise RepositoryBusyError(f"job {active.id} is {active.status} on this repository")
    # Vectors only this repository's texts used go too (else deleting the only repository frees
    # little). A text's cache key is sha256 of what the embedder saw, actors.chunking.embedding_text:
    # header, newline, content. Texts other repositories still hold keep their vectors.
    await conn.execute(
        text(
            "DELETE FROM embedding_cache WHERE text_hash IN ("
            " SELECT sha256(convert_to(header || E'\\n' || content, 'UTF8')) FROM chunks WHERE repository_id = :id"
            " EXCEPT"
            " SELECT sha256(convert_to(header || E'\\n' || content, 'UTF8')) FROM chunks WHERE repository_id <> :id)"
        ),
        {"id": repository_id},
    )
    chunks = (await conn.execute(text("DELETE FROM chunks WHERE repository_id = :id"), {"id": repository_id})).rowcount
    files = (await conn.execute(text("DELETE FROM files WHERE repository_id = :id"), {"id": repository_id})).rowcount
    job_count = await conn.scalar(
        text("SELECT count(*) FROM indexing_jobs WHERE repository_id = :id"), {"id": repository_id}
    )
    # Jobs, their batches and events go with the row (ON DELETE CASCADE).
    await conn.execute(text("DELETE FROM repositories WHERE id = :id"), {"id": repository_id})
    return Deleted(files=int(files or 0), chunks=int(chunks or 0), jobs=int(job_count or 0))


# --- watches (server/watcher.py) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchedRepository:
    id: uuid.UUID
    name: str
    path: str


async def set_watched(conn: AsyncConnection, repository_id: uuid.UUID, watched: bool) -> None:
    """Turn the repository's watch on or off; turning it on clears the error of an earlier watch."""
    await conn.execute(
        text(
            "UPDATE repositories SET watched = :watched,"
            " watch_error = CASE WHEN :watched THEN NULL ELSE watch_error END WHERE id = :id"
        ),
        {"id": repository_id, "watched": watched},
    )


async def watch_path(conn: AsyncConnection, path: str) -> None:
    """Watch the repository stored at ``path`` (admitted just before, so its row exists)."""
    await conn.execute(
        text("UPDATE repositories SET watched = true, watch_error = NULL WHERE path = :path"), {"path": path}
    )


async def watched_repositories(conn: AsyncConnection) -> list[WatchedRepository]:
    """Every watched repository, by path."""
    rows = await conn.execute(text("SELECT id, name, path FROM repositories WHERE watched ORDER BY path"))
    return [WatchedRepository(row.id, row.name, row.path) for row in rows]


async def watched_name(conn: AsyncConnection, repository_id: uuid.UUID) -> str | None:
    """The repository's name while it is watched; None once unwatched or deleted."""
    name = await conn.scalar(text("SELECT name FROM repositories WHERE id = :id AND watched"), {"id": repository_id})
    return str(name) if name is not None else None


async def active_job(conn: AsyncConnection, path: str) -> uuid.UUID | None:
    """The pending, running or blocked job on the repository at ``path``, if any (one by construction)."""
    found = await conn.scalar(
        text("SELECT id FROM indexing_jobs WHERE repo_path = :path AND status = ANY(:active) LIMIT 1"),
        {"path": path, "active": list(ACTIVE_STATUSES)},
    )
    return found if isinstance(found, uuid.UUID) else None


async def record_watch_outcome(
    conn: AsyncConnection, repository_id: uuid.UUID, *, caught_up_at: datetime | None, error: str | None
) -> None:
    """After a job the watch started: when it completed (the index caught up), or why the watch is stuck."""
    await conn.execute(
        text(
            "UPDATE repositories SET watch_caught_up_at = COALESCE(:caught_up_at, watch_caught_up_at),"
            " watch_error = :error WHERE id = :id"
        ),
        {"id": repository_id, "caught_up_at": caught_up_at, "error": error},
    )


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """What the index stored of one file, to tell whether the file changed on disk since."""

    content_hash: str
    size_bytes: int
    #: Start of the job that indexed it: a file last modified before then was read as it is now.
    job_started_at: datetime | None


#: A file modified less than this before its indexing job began is read again anyway: coarse
#: file-system timestamps and small clock steps must not make a just-edited file look unchanged.
MTIME_SLACK = timedelta(seconds=2)


def read_as_it_is(indexed: IndexedFile, *, size: int, mtime: float) -> bool:
    """True when the index's hash is the file's content without reading it (git's "racy clean" rule).

    The size is the stored one and the file was last modified before the job that indexed it began,
    so that job read these very bytes. Without a job start (its job was purged) nothing is proven.
    """
    started = indexed.job_started_at
    return size == indexed.size_bytes and started is not None and mtime < (started - MTIME_SLACK).timestamp()


async def indexed_by_path(conn: AsyncConnection, repository_id: uuid.UUID) -> dict[str, IndexedFile]:
    """``path -> IndexedFile`` of every file of the repository in the index (for the planner)."""
    rows = await conn.execute(
        text(
            "SELECT f.path, f.content_hash, f.size_bytes, j.started_at FROM files f"
            " LEFT JOIN indexing_jobs j ON j.id = f.job_id WHERE f.repository_id = :id"
        ),
        {"id": repository_id},
    )
    return {row.path: IndexedFile(row.content_hash, int(row.size_bytes), row.started_at) for row in rows}


async def indexed_files(conn: AsyncConnection, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], IndexedFile]:
    """``(repository path, file path) -> IndexedFile`` of the ``wanted`` files that are in the index."""
    if not wanted:
        return {}
    rows = await conn.execute(
        text(
            "SELECT r.path AS repository_path, f.path, f.content_hash, f.size_bytes, j.started_at"
            " FROM unnest(CAST(:repos AS text[]), CAST(:paths AS text[])) AS w(repo, path)"
            " JOIN repositories r ON r.path = w.repo JOIN files f ON f.repository_id = r.id AND f.path = w.path"
            " LEFT JOIN indexing_jobs j ON j.id = f.job_id"
        ),
        {"repos": [repo for repo, _ in wanted], "paths": [path for _, path in wanted]},
    )
    return {
        (row.repository_path, row.path): IndexedFile(row.content_hash, int(row.size_bytes), row.started_at)
        for row in rows
    }
