"""The planner hashes files through the chunk stage's guarded reader (issue 16): a FIFO swapped in
after the scan must not block its thread, a symlink to a device must not be read without limit."""

from __future__ import annotations

import os
from pathlib import Path

from actors.planning import fingerprint_files
from actors.scanning import ScannedFile
from tests.unit.helpers import run_with_timeout


def test_a_fifo_swapped_in_after_the_scan_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("x = 1\n", encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.py")  # was a regular file when scanned
    files = [ScannedFile("ok.py", 6), ScannedFile("pipe.py", 6)]
    found, skipped = run_with_timeout(lambda: fingerprint_files(tmp_path, files, max_file_bytes=1000), 20)
    by_path = {item.path: item for item in found}
    assert by_path["ok.py"].digest is not None
    # Kept without a digest: the chunk stage reads it again and reports why it is not indexed.
    assert by_path["pipe.py"].digest is None
    assert skipped == {}


def test_a_symlink_to_an_endless_device_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    (tmp_path / "inside.py").write_text("y = 2\n", encoding="utf-8")
    (tmp_path / "alias.py").symlink_to(tmp_path / "inside.py")
    files = [ScannedFile("zero.py", 6), ScannedFile("alias.py", 6)]
    found, skipped = run_with_timeout(lambda: fingerprint_files(tmp_path, files, max_file_bytes=1000), 20)
    by_path = {item.path: item for item in found}
    assert by_path["zero.py"].digest is None
    assert by_path["alias.py"].digest is not None  # a symlink inside the repository is still read
    assert skipped == {}


def test_a_file_grown_past_the_limit_is_read_only_up_to_it(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_bytes(b"a" * 5000)
    found, skipped = fingerprint_files(tmp_path, [ScannedFile("big.py", 10)], max_file_bytes=1000)
    assert found == []
    assert skipped == {"too large": 1}
