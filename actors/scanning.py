"""Walk a repository and decide which files are worth indexing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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


def looks_binary(raw: bytes) -> bool:
    """True when the bytes contain a NUL anywhere: not text worth embedding.

    Git sniffs only the first 8 KiB, but a NUL further on (an ``.ai`` file is a PDF with text up
    front) cannot be stored in a PostgreSQL ``text`` column and would fail the whole batch.
    """
    return b"\x00" in raw


@dataclass(frozen=True, slots=True)
class ScannedFile:
    path: str  # relative to the repository root, with forward slashes
    size: int
    #: st_mtime of a regular file (None for a symlink: its target may be swapped for an old file)
    mtime: float | None = None


@dataclass(slots=True)
class ScanResult:
    files: list[ScannedFile]
    #: reason -> count (binary, too large, unreadable, symlink outside repository, symlink to ignored file)
    skipped: dict[str, int]
    #: Relative paths of directories (or entries) that could not be listed or examined, with the
    #: reason. What the index holds under them is unknown now, so it must be kept, not removed.
    unreadable: dict[str, str] = field(default_factory=dict)


class UnresolvablePathError(Exception):
    """A repository path cannot be resolved (symlink loop, unusable name); the message says so."""


def resolve_repo_path(path: Path, shown_path: str, *, strict: bool = False) -> Path:
    """``path`` with symlinks and ``..`` resolved, in the one wording for failures that every check
    of a repository path uses (admission in server/service.py, the planner and chunk stage here).

    Raises:
        UnresolvablePathError: a symlink loop or an OS error other than a missing path.
        FileNotFoundError: with ``strict``, the path does not exist (the caller words that case).
    """
    try:
        return path.resolve(strict=strict)
    except FileNotFoundError:
        if strict:
            raise
        reason = "No such file or directory"
    except RuntimeError:  # Python 3.11 raises this on a symlink loop
        reason = "symlink loop"
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise UnresolvablePathError(f"repository path {shown_path} cannot be resolved: {reason}")


class RootRejectedError(Exception):
    """The repository root may not (or cannot) be read now; the message says why and is shown as the job's error."""


def checked_root(repo_path: str, allowed_roots: Sequence[Path]) -> Path:
    """The repository root to read, re-resolved and re-checked now (planner and chunk stage).

    ``repo_path`` was resolved and checked against the allowed roots when the job was admitted. A
    job can wait (pending) for any length of time, so the directory may since have been swapped
    for a symlink leading elsewhere: the path must still resolve to itself, lie inside
    ``allowed_roots`` (when set) and be a listable directory. The messages name no path but the
    repository's own, so nothing is revealed about where a swapped-in symlink points.

    Raises:
        RootRejectedError: the root moved, left the allowed roots, vanished or cannot be listed.
    """
    stored = Path(repo_path)
    try:
        real = resolve_repo_path(stored, repo_path, strict=True)
    except FileNotFoundError:
        raise RootRejectedError(f"repository path {repo_path} no longer exists") from None
    except UnresolvablePathError as error:
        raise RootRejectedError(str(error)) from None
    if real != stored:
        raise RootRejectedError(
            f"repository path {repo_path} no longer resolves to itself (it or a parent was replaced by a "
            "symlink since the job was started); refusing to follow it: start a job on the real path instead"
        )
    roots = [root.resolve() for root in allowed_roots]
    if roots and not any(real.is_relative_to(root) for root in roots):
        raise RootRejectedError(
            f"repository path {repo_path} is outside the allowed roots (CODEBASE_MCP_ALLOWED_ROOTS)"
        )
    if not real.is_dir():
        raise RootRejectedError(f"repository path {repo_path} is no longer a directory")
    try:
        with os.scandir(real) as entries:
            next(entries, None)
    except OSError as error:
        raise RootRejectedError(
            f"repository root {repo_path} cannot be listed ({error.strerror or type(error).__name__}); "
            "its index was left as it was"
        ) from None
    return real


def kept_unreadable(paths: Iterable[str], unreadable: Iterable[str]) -> list[str]:
    """The indexed ``paths`` that lie under (or are) an unreadable entry: they stay in the index."""
    prefixes = tuple(f"{entry}/" for entry in unreadable)
    names = set(unreadable)
    return [path for path in paths if path in names or path.startswith(prefixes)]


def unreadable_note(unreadable: dict[str, str], kept: int) -> str:
    """What a job says about the parts of the tree it could not read, e.g. for the final status."""
    shown = ", ".join(f"{path} ({reason})" for path, reason in sorted(unreadable.items())[:5])
    more = f" and {len(unreadable) - 5:,} more" if len(unreadable) > 5 else ""
    count = len(unreadable)
    return (
        f"{count:,} path{'s' if count != 1 else ''} could not be read: {shown}{more}; "
        f"{kept:,} indexed file{'s' if kept != 1 else ''} under them kept as they were"
    )


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
    unreadable: dict[str, str] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for entry, relative in _walk(root, rules, skip, unreadable):
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
            info = entry.stat()
            size, mtime = info.st_size, None if entry.is_symlink() else info.st_mtime
        except OSError as error:
            skip("unreadable")
            unreadable[relative] = error.strerror or type(error).__name__
            continue
        if size > max_file_bytes:
            skip("too large")
            continue
        found.append(ScannedFile(relative, size, mtime))
        if on_progress is not None and len(found) % progress_every == 0:
            on_progress(len(found))
    found.sort(key=lambda item: item.path)
    return ScanResult(found, skipped, unreadable)


def _valid_name(name: str) -> bool:
    """Whether a name read from the file system is valid UTF-8 (``os.scandir`` smuggles other bytes
    in as lone surrogates, which neither JSON nor PostgreSQL accepts)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(
    root: Path, rules: IgnoreRules, skip: Callable[[str], None], unreadable: dict[str, str]
) -> Iterator[tuple[os.DirEntry[str], str]]:
    """Regular files (or symlinks to them) under ``root`` with their relative paths.

    Ignored directories are not entered; whatever else is met is counted with ``skip``. A
    directory (or entry) that cannot be listed (or examined) is recorded in ``unreadable``, relative
    path -> reason, so that the planner keeps what the index holds under it.

    Raises:
        OSError: the root itself cannot be listed (a scan of nothing must not pass for an empty tree).
    """
    stack = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not _valid_name(entry.name):
                        skip("name not valid UTF-8")
                        continue
                    relative = prefix + entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name in IGNORED_DIRS or rules.matches(relative, is_dir=True):
                                continue
                            if os.path.lexists(os.path.join(entry.path, ".git")):
                                # Another repository (a clone or submodule inside this one): git does not
                                # track its files as this one's, and indexing both would store them twice.
                                skip("nested repository")
                                continue
                            stack.append((entry.path, relative + "/"))
                        elif entry.is_file(follow_symlinks=True):
                            yield entry, relative
                        elif entry.is_symlink():
                            # To a directory (never followed: loops, escapes) or to nothing.
                            skip("symlink to a directory" if entry.is_dir() else "broken symlink")
                        else:
                            skip("not a regular file")  # FIFO, socket, device: reading could block
                    except OSError as error:
                        skip("unreadable")
                        unreadable[relative] = error.strerror or type(error).__name__
        except OSError as error:
            if directory == str(root):
                raise
            skip("unreadable directory")
            unreadable[prefix.rstrip("/")] = error.strerror or type(error).__name__
