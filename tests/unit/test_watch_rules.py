"""The watch's change filter (the scanner's rules) and the stale check of search hits, on real files."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchfiles import Change

from models.repositories import IndexedFile
from server.watcher import ChangeFilter, changed_on_disk, stale_marks


def test_the_filter_drops_what_the_scanner_ignores(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / ".gitignore").write_text("*.log\ngenerated/\n", encoding="utf-8")
    (root / "generated").mkdir()
    (root / "nested" / ".git").mkdir(parents=True)
    (root / "src").mkdir()
    keep = ChangeFilter(root)

    def kept(relative: str) -> bool:
        return keep(Change.modified, str(root / relative))

    assert kept("src/app.py") and kept("README.md") and kept("src")
    assert kept(".gitignore"), "a changed .gitignore changes what is indexed"
    assert kept(".")  # the root itself: deleted or replaced
    for ignored in (
        ".git/index",
        "node_modules/pkg/index.js",
        "src/__pycache__/app.cpython-311.pyc",
        "debug.log",
        "generated/out.py",
        "logo.png",
        "nested/lib.py",
    ):
        assert not kept(ignored), ignored
    assert not keep(Change.added, str(tmp_path.parent / "elsewhere.py"))


def test_a_new_gitignore_is_read_again(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    keep = ChangeFilter(root)
    assert keep(Change.added, str(root / "notes.txt"))
    (root / ".gitignore").write_text("notes.txt\n", encoding="utf-8")
    assert keep(Change.added, str(root / ".gitignore"))
    assert not keep(Change.modified, str(root / "notes.txt"))


def _indexed(path: Path, started: datetime | None) -> IndexedFile:
    raw = path.read_bytes()
    return IndexedFile(hashlib.sha256(raw).hexdigest(), len(raw), started)


def test_changed_on_disk(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    path = root / "a.py"
    path.write_text("x = 1\n", encoding="utf-8")
    indexed = _indexed(path, datetime.now(UTC) - timedelta(minutes=5))
    assert changed_on_disk(root, "a.py", indexed, 1000) is False
    path.write_text("x = 2\n", encoding="utf-8")  # same size, other bytes: hashed
    assert changed_on_disk(root, "a.py", indexed, 1000) is True
    path.write_text("x = 1\n", encoding="utf-8")  # saved back as indexed
    assert changed_on_disk(root, "a.py", indexed, 1000) is False
    path.write_text("x = 10\n", encoding="utf-8")
    assert changed_on_disk(root, "a.py", indexed, 1000) is True  # another size: no read
    path.unlink()
    assert changed_on_disk(root, "a.py", indexed, 1000) is True


def test_an_old_mtime_proves_the_file_was_read_as_it_is(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    path = root / "a.py"
    path.write_text("x = 1\n", encoding="utf-8")
    indexed = _indexed(path, datetime.now(UTC))
    path.write_text("x = 2\n", encoding="utf-8")
    old = time.time() - 3600
    os.utime(path, (old, old))
    # Modified before the indexing job began (as stat says): not read, taken as indexed.
    assert changed_on_disk(root, "a.py", indexed, 1000) is False
    # With no job to compare with (purged), the bytes decide.
    assert changed_on_disk(root, "a.py", IndexedFile(indexed.content_hash, indexed.size_bytes, None), 1000) is True


def test_unreadable_or_escaping_files_are_unknown(tmp_path: Path) -> None:
    root = (tmp_path / "repo").resolve()
    root.mkdir()
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n", encoding="utf-8")
    (root / "link.py").symlink_to(outside)
    indexed = IndexedFile(hashlib.sha256(b"x = 2\n").hexdigest(), 6, None)
    assert changed_on_disk(root, "link.py", indexed, 1000) is None
    marks = stale_marks(
        [(str(root), "link.py"), (str(root), "link.py"), (str(root), "unknown.py")],
        {(str(root), "link.py"): indexed},
        1000,
    )
    assert marks == {(str(root), "link.py"): None, (str(root), "unknown.py"): None}
