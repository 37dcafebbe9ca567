"""Walk a repository and decide which files are worth indexing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

#: Folders that hold dependencies, build output or tool caches, never the project's own code.
IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "dist",
        "build",
        "target",
        ".next",
        ".gradle",
        ".idea",
        "vendor",
        "site-packages",
        ".eggs",
        "bower_components",
        ".terraform",
        ".cache",
    }
)

#: Extensions that are never text worth embedding (checked before opening the file).
BINARY_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".bmp",
        ".ico",
        ".webp",
        ".pdf",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".7z",
        ".rar",
        ".jar",
        ".war",
        ".class",
        ".so",
        ".dll",
        ".dylib",
        ".exe",
        ".o",
        ".a",
        ".pyc",
        ".pyo",
        ".whl",
        ".bin",
        ".dat",
        ".db",
        ".sqlite",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".mp3",
        ".mp4",
        ".wav",
        ".avi",
        ".mov",
        ".mkv",
        ".psd",
        ".npy",
        ".npz",
        ".pkl",
        ".parquet",
        ".onnx",
        ".pt",
        ".safetensors",
    }
)

LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".m": "objc",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".scss": "css",
    ".md": "markdown",
    ".rst": "rst",
    ".txt": "text",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".xml": "xml",
    ".lua": "lua",
    ".r": "r",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".dart": "dart",
    ".vue": "vue",
    ".svelte": "svelte",
    ".tf": "terraform",
    ".proto": "protobuf",
    ".gradle": "gradle",
}
_NAMED_LANGUAGES = {"Dockerfile": "dockerfile", "Makefile": "make", "CMakeLists.txt": "cmake"}
#: Every name :func:`language_of` can return.
ALL_LANGUAGES = frozenset(LANGUAGES.values()) | frozenset(_NAMED_LANGUAGES.values()) | {"text"}


def language_of(path: str) -> str:
    name = os.path.basename(path)
    if name in _NAMED_LANGUAGES:
        return _NAMED_LANGUAGES[name]
    return LANGUAGES.get(os.path.splitext(name)[1].lower(), "text")


#: How much of a file's start is searched for a NUL byte to call it binary (as git does).
BINARY_SNIFF_BYTES = 8192


def looks_binary(head: bytes) -> bool:
    """True when a file's first bytes contain a NUL: not text worth embedding."""
    return b"\x00" in head[:BINARY_SNIFF_BYTES]


@dataclass(frozen=True, slots=True)
class ScannedFile:
    path: str  # relative to the repository root, with forward slashes
    size: int


@dataclass(slots=True)
class ScanResult:
    files: list[ScannedFile]
    #: reason -> count (binary, too large, unreadable, symlink outside repository, symlink to ignored file)
    skipped: dict[str, int]


class IgnoreRules:
    """Git's ignore rules for one repository: every ``.gitignore`` applies to its own directory's subtree.

    Patterns of a deeper ``.gitignore`` override shallower ones, the last matching pattern of a file
    decides (so ``!keep.log`` re-includes), and nothing inside an ignored directory can be
    re-included, as in git. Directories named in :data:`IGNORED_DIRS` are ignored at any depth.
    ``.gitignore`` files are read lazily, once each.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}

    def _spec(self, directory: str) -> pathspec.GitIgnoreSpec | None:
        """The ``.gitignore`` of ``directory`` (relative, ``""`` for the root), or None."""
        if directory not in self._specs:
            ignore_file = self.root / directory / ".gitignore"
            spec = None
            try:
                if ignore_file.is_file():
                    lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
                    spec = pathspec.GitIgnoreSpec.from_lines(lines)
            except OSError:
                spec = None
            self._specs[directory] = spec
        return self._specs[directory]

    def matches(self, relative: str, *, is_dir: bool) -> bool:
        """Whether the ``.gitignore`` files above ``relative`` ignore it; its parents are not checked."""
        parts = relative.split("/")
        verdict: bool | None = None
        for depth in range(len(parts)):
            spec = self._spec("/".join(parts[:depth]))
            if spec is None:
                continue
            result = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else "")).include
            if result is not None:
                verdict = result
        return bool(verdict)

    def ignored(self, relative: str, *, is_dir: bool = False) -> bool:
        """Whether ``relative`` or any directory above it is ignored (for paths not reached by a walk)."""
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            if parts[depth - 1] in IGNORED_DIRS or self.matches("/".join(parts[:depth]), is_dir=True):
                return True
        if is_dir and parts[-1] in IGNORED_DIRS:
            return True
        return self.matches(relative, is_dir=is_dir)


def scan_repository(
    root: Path, *, max_file_bytes: int, progress_every: int = 1000, on_progress: Callable[[int], None] | None = None
) -> ScanResult:
    """List indexable files under ``root``, sorted by path (so batches are deterministic).

    Follows no symlinked directories (no loops, nothing outside the root). A symlinked file is kept
    only when it resolves to a file inside the root that is not itself ignored. Honours every
    ``.gitignore`` in the tree (see :class:`IgnoreRules`). Ignored files are neither listed nor
    counted; the other files left out are counted in ``skipped`` by reason.
    """
    root = root.resolve()
    rules = IgnoreRules(root)
    found: list[ScannedFile] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for entry, relative in _walk(root, rules, skip):
        if rules.matches(relative, is_dir=False):
            continue
        if os.path.splitext(entry.name)[1].lower() in BINARY_EXTENSIONS:
            skip("binary")
            continue
        try:
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    skip("symlink outside repository")
                    continue
                target_relative = target.relative_to(root).as_posix()
                if rules.ignored(target_relative) or target.suffix.lower() in BINARY_EXTENSIONS:
                    skip("symlink to ignored file")
                    continue
            size = entry.stat().st_size
        except OSError:
            skip("unreadable")
            continue
        if size > max_file_bytes:
            skip("too large")
            continue
        found.append(ScannedFile(relative, size))
        if on_progress is not None and len(found) % progress_every == 0:
            on_progress(len(found))
    found.sort(key=lambda item: item.path)
    return ScanResult(found, skipped)


def _walk(root: Path, rules: IgnoreRules, skip: Callable[[str], None]) -> Iterator[tuple[os.DirEntry[str], str]]:
    """Regular files (or symlinks to them) under ``root`` with their relative paths.

    Ignored directories are not entered; whatever else is met is counted with ``skip``.
    """
    stack = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    relative = prefix + entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name not in IGNORED_DIRS and not rules.matches(relative, is_dir=True):
                                stack.append((entry.path, relative + "/"))
                        elif entry.is_file(follow_symlinks=True):
                            yield entry, relative
                        elif entry.is_symlink():
                            # To a directory (never followed: loops, escapes) or to nothing.
                            skip("symlink to a directory" if entry.is_dir() else "broken symlink")
                        else:
                            skip("not a regular file")  # FIFO, socket, device: reading could block
                    except OSError:
                        skip("unreadable")
        except OSError:
            if directory != str(root):
                skip("unreadable directory")
