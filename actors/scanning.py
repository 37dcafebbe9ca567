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


def language_of(path: str) -> str:
    name = os.path.basename(path)
    if name in _NAMED_LANGUAGES:
        return _NAMED_LANGUAGES[name]
    return LANGUAGES.get(os.path.splitext(name)[1].lower(), "text")


@dataclass(frozen=True, slots=True)
class ScannedFile:
    path: str  # relative to the repository root, with forward slashes
    size: int


@dataclass(slots=True)
class ScanResult:
    files: list[ScannedFile]
    skipped: dict[str, int]  # reason -> count (binary extension, too large, unreadable, symlink outside)


def _gitignore(root: Path) -> pathspec.PathSpec | None:
    ignore_file = root / ".gitignore"
    if not ignore_file.is_file():
        return None
    try:
        lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def scan_repository(
    root: Path, *, max_file_bytes: int, progress_every: int = 1000, on_progress: Callable[[int], None] | None = None
) -> ScanResult:
    """List indexable files under ``root``, sorted by path (so batches are deterministic).

    Follows no symlinked directories (no loops, nothing outside the root); symlinked files are
    followed only when they resolve inside the root. Honours the root ``.gitignore``.
    """
    root = root.resolve()
    spec = _gitignore(root)
    found: list[ScannedFile] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for entry in _walk(root, skip):
        relative = entry.path[len(str(root)) + 1 :].replace(os.sep, "/")
        if spec is not None and spec.match_file(relative):
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


def _walk(root: Path, skip: Callable[[str], None]) -> Iterator[os.DirEntry[str]]:
    """Regular files (or symlinks to them) under ``root``; whatever else is met is counted with ``skip``."""
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name not in IGNORED_DIRS:
                                stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=True):
                            yield entry
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
