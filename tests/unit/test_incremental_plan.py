"""Incremental re-index, the pure parts: what changed, plan-time hashing, messages, embedder names."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors.embedders import build_embedder, configured_name
from actors.embedders.local_model import MODEL_NAME
from actors.planning import fingerprint_files
from actors.scanning import ScannedFile, scan_repository
from models.ledger import diff_against_index
from models.lifecycle import completion_message, describe_progress
from models.lifecycle import planned_message as plan_message
from models.repositories import IndexedFile
from models.settings import Settings


def test_diff_sorts_files_into_changed_unchanged_and_removed() -> None:
    on_disk = {"same.py": "a", "edited.py": "new", "added.py": "c", "unreadable.py": None}
    indexed = {"same.py": "a", "edited.py": "old", "unreadable.py": "d", "deleted.py": "e"}
    diff = diff_against_index(on_disk, indexed)
    assert diff.changed == ["edited.py", "added.py", "unreadable.py"]
    assert diff.unchanged == 1
    assert diff.removed == ["deleted.py"]


def test_diff_of_a_first_index_changes_everything_and_removes_nothing() -> None:
    diff = diff_against_index({"a.py": "1", "b.py": "2"}, {})
    assert (diff.changed, diff.unchanged, diff.removed) == (["a.py", "b.py"], 0, [])


def test_diff_of_an_emptied_repository_removes_everything() -> None:
    diff = diff_against_index({}, {"a.py": "1", "b.py": "2"})
    assert (diff.changed, diff.unchanged, sorted(diff.removed)) == ([], 0, ["a.py", "b.py"])


def test_fingerprints_are_the_sha256_the_files_table_stores(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"print('a')\n")
    (tmp_path / "blob.txt").write_bytes(b"text\x00with a NUL")
    (tmp_path / "grown.py").write_bytes(b"x" * 200)
    files = [
        ScannedFile("a.py", 11),
        ScannedFile("blob.txt", 15),
        ScannedFile("grown.py", 10),  # grew since the scan
        ScannedFile("gone.py", 5),  # deleted since the scan
    ]
    found, skipped = fingerprint_files(tmp_path, files, max_file_bytes=100)
    assert [(item.path, item.size, item.digest) for item in found] == [
        ("a.py", 11, hashlib.sha256(b"print('a')\n").hexdigest())
    ]
    assert skipped == {"binary": 1, "too large": 1}


def test_a_file_older_than_its_indexing_job_is_taken_unread_and_a_newer_one_is_hashed(tmp_path: Path) -> None:
    """Same size and modified before the job that indexed it began: the stored hash stands (git's rule)."""
    job_started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    before, after = (job_started - timedelta(minutes=5)).timestamp(), (job_started + timedelta(minutes=5)).timestamp()
    stored = IndexedFile(hashlib.sha256(b"x = 1\n").hexdigest(), 6, job_started)
    for name in ("old.py", "new.py", "link_target.py", "purged.py", "resized.py"):
        (tmp_path / name).write_bytes(b"x = 2\n")  # the same size as the indexed bytes, other content
    (tmp_path / "resized.py").write_bytes(b"x = 22\n")
    for name in ("old.py", "link_target.py", "purged.py", "resized.py"):
        os.utime(tmp_path / name, (before, before))
    os.utime(tmp_path / "new.py", (after, after))
    indexed = {
        "old.py": stored,
        "new.py": stored,
        "link.py": stored,
        "purged.py": IndexedFile(stored.content_hash, 6, None),  # its job is gone: nothing proven
        "resized.py": stored,
    }
    (tmp_path / "link.py").symlink_to("link_target.py")
    files = [
        ScannedFile("old.py", 6, before),
        ScannedFile("new.py", 6, after),
        ScannedFile("link.py", 6, None),  # the scan records no mtime for a symlink
        ScannedFile("purged.py", 6, before),
        ScannedFile("resized.py", 7, before),
    ]
    found, _ = fingerprint_files(tmp_path, files, max_file_bytes=100, indexed=indexed)
    digests = {item.path: item.digest for item in found}
    now = hashlib.sha256(b"x = 2\n").hexdigest()
    assert digests == {
        "old.py": stored.content_hash,
        "new.py": now,
        "link.py": now,
        "purged.py": now,
        "resized.py": hashlib.sha256(b"x = 22\n").hexdigest(),
    }
    # Without the index (TRUST_MTIME=false) every file is read.
    found, _ = fingerprint_files(tmp_path, files[:1], max_file_bytes=100)
    assert found[0].digest == now


def test_the_scan_records_mtimes_of_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a = 1\n", encoding="utf-8")
    (tmp_path / "b.py").symlink_to("a.py")
    scanned = {item.path: item.mtime for item in scan_repository(tmp_path, max_file_bytes=1000).files}
    assert scanned["a.py"] == (tmp_path / "a.py").stat().st_mtime
    assert scanned["b.py"] is None


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_keeps_no_digest_so_the_chunk_stage_reports_it(tmp_path: Path) -> None:
    locked = tmp_path / "locked.py"
    locked.write_text("x = 1\n", encoding="utf-8")
    locked.chmod(0)
    try:
        found, skipped = fingerprint_files(tmp_path, [ScannedFile("locked.py", 6)], max_file_bytes=100)
    finally:
        locked.chmod(0o644)
    assert [(item.path, item.digest) for item in found] == [("locked.py", None)]
    assert skipped == {}


def test_fingerprints_of_a_scan_cover_every_scanned_text_file(tmp_path: Path) -> None:
    for index in range(30):
        (tmp_path / f"m{index}.py").write_text(f"value = {index}\n", encoding="utf-8")
    scan = scan_repository(tmp_path, max_file_bytes=1000)
    found, skipped = fingerprint_files(tmp_path, scan.files, max_file_bytes=1000)
    assert [item.path for item in found] == [item.path for item in scan.files]
    assert len({item.digest for item in found}) == 30 and skipped == {}


def test_up_to_date_message_names_the_unchanged_files() -> None:
    message = completion_message(
        files_total=0,
        files_indexed=0,
        chunks_created=0,
        files_unchanged=15000,
        files_removed=0,
        files_skipped=0,
        files_failed=0,
        seconds=1.23,
    )
    assert message == "up to date: 15,000 files unchanged (checked in 1.2 s)"


def test_up_to_date_message_counts_removed_files() -> None:
    message = completion_message(
        files_total=0,
        files_indexed=0,
        chunks_created=0,
        files_unchanged=10,
        files_removed=2,
        files_skipped=1,
        files_failed=0,
        seconds=0.4,
    )
    assert message.startswith("up to date: 10 files unchanged, 2 removed, 1 skipped")


def test_completion_message_after_work_keeps_the_complete_prefix() -> None:
    message = completion_message(
        files_total=3,
        files_indexed=3,
        chunks_created=12,
        files_unchanged=1497,
        files_removed=1,
        files_skipped=0,
        files_failed=0,
        seconds=2.0,
    )
    assert message == "complete: 3 files indexed, 12 chunks, 1,497 unchanged, 1 removed, 0 skipped, 0 failed in 2.0 s"
    first = completion_message(
        files_total=0,
        files_indexed=0,
        chunks_created=0,
        files_unchanged=0,
        files_removed=0,
        files_skipped=0,
        files_failed=0,
        seconds=0.1,
    )
    assert first.startswith("complete: 0 files indexed")  # an empty repository is not "up to date"


def test_plan_message_names_changed_unchanged_removed_and_the_embedder_change() -> None:
    assert plan_message(changed=1, batches=1, unchanged=1499, removed=0, skipped=0) == (
        "chunking: 1 file in 1 batch to index, 1,499 unchanged"
    )
    message = plan_message(
        changed=40, batches=2, unchanged=0, removed=1, skipped=3, note="embedder changed from a to b: full re-index"
    )
    assert message == "chunking: embedder changed from a to b: full re-index: 40 files in 2 batches to index, " + (
        "1 removed, 3 skipped"
    )


def test_progress_message_counts_unchanged_files() -> None:
    _, message = describe_progress(
        {"chunked": 1}, files_done=5, files_total=10, files_indexed=5, chunks=20, unchanged=14990
    )
    assert "5/10 files processed" in message and "14,990 unchanged" in message


def test_configured_name_matches_the_embedder_built() -> None:
    ollama = Settings(embedder="ollama", ollama_model="nomic-embed-text", ollama_dimension=768)
    assert configured_name(ollama) == "ollama:nomic-embed-text" == build_embedder(ollama, 768).name
    assert configured_name(Settings(embedder="local")) == f"local:{MODEL_NAME}"
