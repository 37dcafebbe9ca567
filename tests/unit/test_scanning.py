"""``actors.scanning``: which files of a repository get indexed, and how the rest are counted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.scanning import IGNORED_DIRS, IgnoreRules, language_of, looks_binary, scan_repository
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


def test_nested_gitignore_applies_to_its_own_subtree_only(repo: Path) -> None:
    _write(repo, "pkg/.gitignore", "*.gen.py\n/local_only.py\ncache/\n")
    _write(repo, "pkg/a.py")
    _write(repo, "pkg/a.gen.py")
    _write(repo, "pkg/deep/b.gen.py")
    _write(repo, "pkg/local_only.py")
    _write(repo, "pkg/deep/local_only.py")  # anchored to pkg/: only pkg/local_only.py is ignored
    _write(repo, "pkg/cache/c.py")
    _write(repo, "other/a.gen.py")  # outside pkg/: the pattern does not reach it
    _write(repo, "local_only.py")
    assert _paths(repo) == [
        "local_only.py",
        "other/a.gen.py",
        "pkg/.gitignore",
        "pkg/a.py",
        "pkg/deep/local_only.py",
    ]


def test_deeper_gitignore_overrides_the_root_one(repo: Path) -> None:
    _write(repo, ".gitignore", "*.log\n")
    _write(repo, "logs/.gitignore", "!important.log\n")
    _write(repo, "logs/important.log")
    _write(repo, "logs/noise.log")
    _write(repo, "important.log")
    _write(repo, "sub/.gitignore", "keep.py\n")
    _write(repo, "sub/keep.py")
    _write(repo, "keep.py")
    assert _paths(repo) == [".gitignore", "keep.py", "logs/.gitignore", "logs/important.log", "sub/.gitignore"]


def test_gitignore_inside_an_ignored_directory_cannot_re_include(repo: Path) -> None:
    _write(repo, ".gitignore", "generated/\n")
    _write(repo, "generated/.gitignore", "!*\n")
    _write(repo, "generated/out.py")
    _write(repo, "src/generated/.gitignore", "!keep.py\n")
    _write(repo, "src/generated/keep.py")
    _write(repo, "src/app.py")
    assert _paths(repo) == [".gitignore", "src/app.py"]


def test_ignore_rules_check_every_parent_directory(repo: Path) -> None:
    _write(repo, ".gitignore", "secret/\n")
    _write(repo, "pkg/.gitignore", "*.tmp\n")
    rules = IgnoreRules(repo)
    assert rules.ignored("secret/key.py")
    assert rules.ignored("a/secret/deeper/key.py")
    assert rules.ignored("pkg/x.tmp")
    assert rules.ignored("pkg/sub/x.tmp")
    assert rules.ignored("node_modules/lib/index.js")
    assert rules.ignored("web/node_modules", is_dir=True)
    assert not rules.ignored("x.tmp")
    assert not rules.ignored("pkg/x.py")
    assert not rules.ignored("secretive/key.py")


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


def test_symlinked_file_pointing_at_an_ignored_file_is_skipped(repo: Path) -> None:
    _write(repo, ".gitignore", "*.secret\nprivate/\n")
    _write(repo, "config.secret", "PASSWORD = 'x'\n")
    _write(repo, "private/keys.py", "KEY = 'x'\n")
    _write(repo, "node_modules/dep/index.js", "module.exports = 1\n")
    _write(repo, "pkg/.gitignore", "local.py\n")
    _write(repo, "pkg/local.py", "LOCAL = 1\n")
    _write(repo, "app.py")
    os.symlink("config.secret", repo / "config.py")
    os.symlink("private/keys.py", repo / "keys.py")
    os.symlink("node_modules/dep/index.js", repo / "dep.js")
    os.symlink("pkg/local.py", repo / "local_alias.py")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert [f.path for f in result.files] == [".gitignore", "app.py", "pkg/.gitignore"]
    assert result.skipped == {"symlink to ignored file": 4}


def test_symlinked_file_pointing_at_a_binary_extension_is_skipped(repo: Path) -> None:
    _write(repo, "logo.png", b"\x89PNG\r\n")
    os.symlink("logo.png", repo / "logo.txt")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert result.files == []
    assert result.skipped == {"binary": 1, "symlink to ignored file": 1}


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
    ("head", "binary"),
    [(b"", False), (b"print('hi')\n", False), (b"\x89PNG\r\n\x1a\n\x00\x00", True), (b"a" * 9000 + b"\x00", True)],
)
def test_looks_binary_searches_the_whole_file_for_a_nul(head: bytes, binary: bool) -> None:
    # Past git's 8 KiB sniff too: PostgreSQL text cannot hold a NUL, so such a file could not be stored.
    assert looks_binary(head) is binary


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


def test_a_nested_repository_is_skipped_not_indexed_twice(repo: Path) -> None:
    _write(repo, "app.py")
    _write(repo, "libs/clone/.git/HEAD", "ref: refs/heads/main\n")
    _write(repo, "libs/clone/lib.py")
    _write(repo, "libs/submodule/.git", "gitdir: ../../.git/modules/submodule\n")  # a submodule's .git is a file
    _write(repo, "libs/submodule/sub.py")
    _write(repo, "libs/plain/util.py")
    result = scan_repository(repo, max_file_bytes=1_000_000)
    assert [f.path for f in result.files] == ["app.py", "libs/plain/util.py"]
    assert result.skipped == {"nested repository": 2}
    # The nested repository itself is indexed as its own root, .git and all ignored.
    assert _paths(repo / "libs" / "clone") == ["lib.py"]
