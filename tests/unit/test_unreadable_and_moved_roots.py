"""What the scanner and the root check do with trees that cannot be read or were swapped since admission.

Unreadable directories are made real: ``chmod 000`` and, since the tests may run as root (who
reads anything), the scan runs in a child process whose bounding set lacks ``CAP_DAC_OVERRIDE`` and
``CAP_DAC_READ_SEARCH`` (``setpriv``), as a worker running under an ordinary user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.messages import encode_payload
from actors.pipeline import read_and_chunk
from actors.scanning import RootRejectedError, checked_root, kept_unreadable, scan_repository, unreadable_note
from models.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DROP_DAC = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search",
    "--inh-caps",
    "-dac_override,-dac_read_search",
]


def _unprivileged(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python child that obeys file permissions even when the tests run as root."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory unreadable")
        prefix = DROP_DAC
    return subprocess.run(
        [*prefix, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


_SCAN = """
import json, sys
from pathlib import Path
from actors.scanning import scan_repository
try:
    result = scan_repository(Path(sys.argv[1]), max_file_bytes=10_000)
except OSError as error:
    print(json.dumps({"error": type(error).__name__}))
else:
    print(json.dumps({"files": [f.path for f in result.files], "skipped": result.skipped,
                      "unreadable": result.unreadable}))
"""


def _scan_unprivileged(root: Path) -> dict[str, object]:
    done = _unprivileged(_SCAN.replace("sys.argv[1]", repr(str(root))))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for relative in ("top.py", "pkg/a.py", "pkg/deeper/b.py", "other/c.py"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("x = 1\n", encoding="utf-8")
    return root


def test_an_unreadable_subdirectory_is_recorded_so_its_indexed_files_are_kept(tree: Path) -> None:
    (tree / "pkg").chmod(0)
    try:
        result = _scan_unprivileged(tree)
    finally:
        (tree / "pkg").chmod(0o755)
    assert result["files"] == ["other/c.py", "top.py"]
    assert result["skipped"] == {"unreadable directory": 1}
    assert result["unreadable"] == {"pkg": "Permission denied"}
    indexed = ["top.py", "pkg/a.py", "pkg/deeper/b.py", "other/c.py", "pkgs/x.py"]
    assert kept_unreadable(indexed, result["unreadable"]) == ["pkg/a.py", "pkg/deeper/b.py"]  # type: ignore[arg-type]


def test_an_unreadable_root_is_an_error_not_an_empty_tree(tree: Path) -> None:
    tree.chmod(0)
    try:
        result = _scan_unprivileged(tree)
    finally:
        tree.chmod(0o755)
    assert result == {"error": "PermissionError"}


_CHECK = """
import sys
from pathlib import Path
from actors.scanning import RootRejectedError, checked_root
try:
    checked_root(sys.argv[1], [])
except RootRejectedError as error:
    print(error)
"""


def test_the_root_check_refuses_an_unlistable_root_and_says_the_index_is_kept(tree: Path) -> None:
    tree.chmod(0)
    try:
        done = _unprivileged(_CHECK.replace("sys.argv[1]", repr(str(tree))))
    finally:
        tree.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert "cannot be listed (Permission denied); its index was left as it was" in done.stdout


def test_unreadable_note_names_the_paths_and_the_kept_files() -> None:
    note = unreadable_note({"pkg": "Permission denied"}, 300)
    assert note == "1 path could not be read: pkg (Permission denied); 300 indexed files under them kept as they were"


def test_a_name_that_is_not_utf8_is_skipped_not_listed(tree: Path) -> None:
    with open(os.path.join(os.fsencode(tree), b"bad\xff\xfename.py"), "wb") as handle:
        handle.write(b"def f(): pass\n")
    os.mkdir(os.path.join(os.fsencode(tree), b"dir\xff"))
    with open(os.path.join(os.fsencode(tree), b"dir\xff", b"inner.py"), "wb") as handle:
        handle.write(b"y = 2\n")
    result = scan_repository(tree, max_file_bytes=10_000)
    assert [f.path for f in result.files] == ["other/c.py", "pkg/a.py", "pkg/deeper/b.py", "top.py"]
    assert result.skipped == {"name not valid UTF-8": 2}
    # Every listed path can go into JSON and PostgreSQL text.
    json.dumps([f.path for f in result.files]).encode("utf-8")


# --- the root re-check (ALLOWED_ROOTS and swapped directories) ---------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "repo").mkdir(parents=True)
    (allowed / "repo" / "ok.py").write_text("ok = 1\n", encoding="utf-8")
    outside.mkdir()
    (outside / "secret.py").write_text('TOP_SECRET = "hunter2"\n', encoding="utf-8")
    return allowed, outside


def test_the_admitted_root_passes(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    assert checked_root(str(allowed / "repo"), [allowed]) == allowed / "repo"


def test_a_root_swapped_for_a_symlink_outside_is_refused_without_naming_the_target(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    (allowed / "repo").rename(allowed / "repo.real")
    (allowed / "repo").symlink_to(outside)
    for allowed_roots in ([allowed], []):  # refused even by a worker that was not given ALLOWED_ROOTS
        with pytest.raises(RootRejectedError, match="no longer resolves to itself") as caught:
            checked_root(str(allowed / "repo"), allowed_roots)
        assert str(outside) not in str(caught.value)


def test_a_parent_swapped_for_a_symlink_is_refused(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, _ = roots
    elsewhere = tmp_path / "elsewhere"
    allowed.rename(elsewhere)
    allowed.symlink_to(elsewhere)
    with pytest.raises(RootRejectedError, match="no longer resolves to itself"):
        checked_root(str(allowed / "repo"), [])


def test_a_root_outside_the_allowed_roots_is_refused(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    with pytest.raises(RootRejectedError, match="outside the allowed roots"):
        checked_root(str(outside), [allowed])


def test_a_vanished_root_is_refused(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    shutil.rmtree(allowed / "repo")
    with pytest.raises(RootRejectedError, match="no longer exists"):
        checked_root(str(allowed / "repo"), [allowed])


def test_the_chunk_stage_reads_nothing_from_a_swapped_root(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, outside = roots
    settings = Settings(data_dir=tmp_path / "data", allowed_roots=[allowed])
    (allowed / "repo").rename(allowed / "repo.real")
    (allowed / "repo").symlink_to(outside)
    payload = read_and_chunk(allowed / "repo", [{"path": "secret.py", "size": 22}], settings)
    assert payload.files == () and payload.skipped == ()
    ((path, reason),) = payload.failed
    assert path == "secret.py" and "no longer resolves to itself" in reason
    assert "hunter2" not in json.dumps(encode_payload(payload))
