"""``actors.pipeline.read_and_chunk`` re-checks each file when it reads it: the tree may have
changed since the scan (a file swapped for a symlink out of the repository, or for a FIFO)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.pipeline import read_and_chunk
from models.settings import Settings
from tests.unit.helpers import run_with_timeout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("TOP SECRET\n", encoding="utf-8")
    (root / "ok.py").write_text("def ok():\n    return 1\n", encoding="utf-8")
    (root / "escape.py").symlink_to(tmp_path / "secret.txt")
    (root / "inside.py").symlink_to(root / "ok.py")
    (root / "loop-a.py").symlink_to(root / "loop-b.py")
    (root / "loop-b.py").symlink_to(root / "loop-a.py")
    os.mkfifo(root / "pipe.py")
    (root / "dir.py").mkdir()
    (root / "grown.py").write_text("x = 1\n" * 1000, encoding="utf-8")
    return root


def test_files_changed_since_the_scan_are_refused_with_reasons(repo: Path) -> None:
    names = ["ok.py", "escape.py", "inside.py", "loop-a.py", "pipe.py", "dir.py", "gone.py", "grown.py"]
    settings = Settings(max_file_bytes=1024)
    # A FIFO read without O_NONBLOCK would block forever: the timeout turns a hang into a failure.
    payload = run_with_timeout(lambda: read_and_chunk(repo, [{"path": name} for name in names], settings), 30)
    assert sorted(item.path for item in payload.files) == ["inside.py", "ok.py"]
    assert sorted(map(tuple, payload.failed)) == [
        ("dir.py", "unreadable: not a regular file"),
        ("escape.py", "symlink outside repository"),
        ("gone.py", "deleted since the scan"),
        ("loop-a.py", "symlink loop"),
        ("pipe.py", "unreadable: not a regular file"),
    ]
    assert payload.skipped == (("grown.py", "too large"),)
    assert all("TOP SECRET" not in chunk.content for chunk in payload.chunks)


def test_a_repository_root_that_is_now_a_symlink_is_not_read(repo: Path, tmp_path: Path) -> None:
    # Jobs store the root resolved at admission: a symlink there now means it was swapped since,
    # possibly to outside ALLOWED_ROOTS (actors.scanning.checked_root), so nothing is read.
    alias = tmp_path / "alias"
    alias.symlink_to(repo, target_is_directory=True)
    payload = read_and_chunk(alias, [{"path": "ok.py"}, {"path": "escape.py"}], Settings())
    assert payload.files == ()
    assert [path for path, _ in payload.failed] == ["ok.py", "escape.py"]
    assert all("no longer resolves to itself" in reason for _, reason in payload.failed)
