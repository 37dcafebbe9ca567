"""``actors.scanning``: which files of a repository get indexed, and how the rest are counted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.scanning import IGNORED_DIRS, language_of, scan_repository
from tests.unit.helpers import run_with_timeout


def _write(root: Path, relative: str, content: str | bytes = "x = 1\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _paths(root: Path, max_file_bytes: int = 1_000_000) -> list[str]:
    return [f.path for f in scan_repository(root, max_file_bytes=max_file_bytes).files]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def test_finds_nested_files_with_forward_slash_relative_paths_and_sizes(repo: Path) -> None:
    _write(repo, "main.py", "print('hi')\n")
    _write(repo, "pkg/sub/util.py", "a" * 123)
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert {(f.path, f.size) for f in result.files} == {("main.py", 12), ("pkg/sub/util.py", 123)}
    assert result.skipped == {}


def test_honours_root_gitignore(repo: Path) -> None:
    _write(repo, ".gitignore", "*.log\n!keep.log\ngenerated/\n/only_at_root.txt\nsecret_*.py\n")
    _write(repo, "app.py")
    _write(repo, "debug.log")
    _write(repo, "sub/trace.log")
    _write(repo, "keep.log")
    _write(repo, "generated/out.py")
    _write(repo, "src/generated/deep.py")
    _write(repo, "only_at_root.txt")
    _write(repo, "docs/only_at_root.txt")
    _write(repo, "secret_keys.py")
    paths = _paths(repo)
    assert paths == [".gitignore", "app.py", "docs/only_at_root.txt", "keep.log"]


def test_works_without_a_gitignore(repo: Path) -> None:
    _write(repo, "a.log")
    assert _paths(repo) == ["a.log"]


@pytest.mark.parametrize("ignored", sorted(IGNORED_DIRS))
def test_skips_ignored_directories_at_any_depth(repo: Path, ignored: str) -> None:
    _write(repo, "keep.py")
    _write(repo, f"{ignored}/inside.py")
    _write(repo, f"pkg/{ignored}/nested.py")
    assert _paths(repo) == ["keep.py"]


def test_ignored_names_only_apply_to_directories(repo: Path) -> None:
    _write(repo, "build")  # a file called like an ignored directory
    _write(repo, "node_modules_notes.md")
    assert _paths(repo) == ["build", "node_modules_notes.md"]


def test_binary_extensions_are_counted_as_skipped(repo: Path) -> None:
    _write(repo, "logo.png", b"\x89PNG\r\n")
    _write(repo, "photos/IMG_001.JPG", b"\xff\xd8\xff")
    _write(repo, "lib/native.so", b"\x7fELF")
    _write(repo, "readme.md", "# hi\n")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert [f.path for f in result.files] == ["readme.md"]
    assert result.skipped == {"binary": 3}


def test_files_over_max_file_bytes_are_skipped_as_too_large(repo: Path) -> None:
    _write(repo, "exact.py", "a" * 100)
    _write(repo, "over.py", "a" * 101)
    _write(repo, "big/huge.txt", "a" * 5000)
    result = scan_repository(repo, max_file_bytes=100)
    assert [(f.path, f.size) for f in result.files] == [("exact.py", 100)]
    assert result.skipped == {"too large": 2}


def test_gitignored_files_are_neither_listed_nor_counted(repo: Path) -> None:
    _write(repo, ".gitignore", "*.png\nbig.py\n")
    _write(repo, "logo.png", b"\x89PNG")
    _write(repo, "big.py", "a" * 500)
    result = scan_repository(repo, max_file_bytes=100)
    assert [f.path for f in result.files] == [".gitignore"]
    assert result.skipped == {}


def test_directory_symlink_loops_do_not_hang(repo: Path) -> None:
    _write(repo, "pkg/mod.py")
    os.symlink("..", repo / "pkg" / "up")  # pkg/up -> repo
    os.symlink(repo, repo / "pkg" / "again")  # absolute loop
    os.symlink("loop_b", repo / "loop_a")  # file-looking symlink cycle
    os.symlink("loop_a", repo / "loop_b")
    result = run_with_timeout(lambda: scan_repository(repo, max_file_bytes=1_000_000), seconds=10)
    assert [f.path for f in result.files] == ["pkg/mod.py"]


def test_symlinked_file_pointing_outside_the_root_is_skipped(tmp_path: Path, repo: Path) -> None:
    outside = _write(tmp_path / "elsewhere", "secret.py", "TOKEN = 'x'\n")
    _write(repo, "inside.py")
    os.symlink(outside, repo / "leak.py")
    os.symlink(os.path.relpath(outside, repo), repo / "leak_relative.py")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert [f.path for f in result.files] == ["inside.py"]
    assert result.skipped == {"symlink outside repository": 2}


def test_symlinked_directory_pointing_outside_is_not_followed(tmp_path: Path, repo: Path) -> None:
    _write(tmp_path / "elsewhere", "secret.py")
    os.symlink(tmp_path / "elsewhere", repo / "linked_dir")
    _write(repo, "inside.py")
    assert _paths(repo) == ["inside.py"]


def test_symlinked_file_inside_the_root_is_kept(repo: Path) -> None:
    _write(repo, "real/impl.py", "a" * 42)
    os.symlink("real/impl.py", repo / "alias.py")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert [(f.path, f.size) for f in result.files] == [("alias.py", 42), ("real/impl.py", 42)]
    assert result.skipped == {}


def test_broken_symlink_is_not_listed(repo: Path) -> None:
    os.symlink("missing.py", repo / "dangling.py")
    _write(repo, "ok.py")
    assert _paths(repo) == ["ok.py"]


def test_root_given_through_a_symlink_gives_the_same_relative_paths(tmp_path: Path, repo: Path) -> None:
    _write(repo, "a/b.py")
    link = tmp_path / "link_to_repo"
    os.symlink(repo, link)
    assert _paths(link) == ["a/b.py"]


def test_output_is_sorted_and_deterministic(repo: Path) -> None:
    names = ["zeta.py", "alpha.py", "a/b.py", "a.txt", "A.md", "m/n/o.py", "m/a.py", "_x.py", "a-b.py"]
    for name in names:
        _write(repo, name)
    first = scan_repository(repo, max_file_bytes=1_000_000)
    second = scan_repository(repo, max_file_bytes=1_000_000)
    paths = [f.path for f in first.files]
    assert paths == sorted(names)
    assert first.files == second.files
    assert first.skipped == second.skipped


def test_progress_is_reported_every_n_files(repo: Path) -> None:
    for i in range(25):
        _write(repo, f"f{i:02d}.py")
    seen: list[int] = []
    result = scan_repository(repo, max_file_bytes=1_000_000, progress_every=10, on_progress=seen.append)
    assert len(result.files) == 25
    assert seen == [10, 20]


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("src/app.py", "python"),
        ("stubs/mod.pyi", "python"),
        ("UPPER.PY", "python"),
        ("web/index.tsx", "typescript"),
        ("lib.rs", "rust"),
        ("main.go", "go"),
        ("include/x.hpp", "cpp"),
        ("Dockerfile", "dockerfile"),
        ("services/api/Dockerfile", "dockerfile"),
        ("Makefile", "make"),
        ("CMakeLists.txt", "cmake"),
        ("notes.txt", "text"),
        ("README.md", "markdown"),
        ("config.yml", "yaml"),
        ("LICENSE", "text"),
        ("weird.unknownext", "text"),
        (".gitignore", "text"),
    ],
)
def test_language_of(path: str, language: str) -> None:
    assert language_of(path) == language
