"""Split a source file into chunks that carry their line range, symbol and header.

:func:`chunk_file` is the entry point. For languages with a tree-sitter grammar it follows the syntax
(:mod:`actors.syntax_chunking`: one chunk per function, method or class, small neighbours merged, big
ones cut into windows); for other text, and for files that do not parse, it falls back to
:func:`chunk_text`: line windows with overlap, cut preferably at a blank line or a top-level definition
so a chunk tends to hold whole functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.syntax_chunking import HEADER_SEPARATOR, Limits, plan_spans

_DEFINITION = re.compile(
    r"^(?:async\s+def|def|class|function|func|fn|pub\s+fn|impl|struct|interface|type|export|public|private|protected)\b"
)


@dataclass(frozen=True, slots=True)
class Chunk:
    start_line: int  # 1-based, inclusive
    end_line: int  # inclusive
    text: str
    symbol: str | None
    #: File path, enclosing class and symbol ("pkg/parser.py · class Parser · def parse"): what the embedder
    #: reads above the text and what full-text search weights highest.
    header: str = ""


_SYMBOL = re.compile(r"^\s*(?:async\s+def|def|class|function|func|fn|pub\s+fn|struct|interface)\s+([A-Za-z_][\w]*)")


def _symbol_of(lines: list[str]) -> str | None:
    for line in lines:
        match = _SYMBOL.match(line)
        if match:
            return match.group(1)
    return None


def split_lines(text: str) -> list[str]:
    """The file's lines without their line breaks; a final line break does not start another line."""
    # Only "\n" ends a line, as for editors, git and tree-sitter; str.splitlines would also split on \f, \v...
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def chunk_text(text: str, *, window: int, overlap: int, max_chars: int, path: str = "") -> list[Chunk]:
    """Chunk ``text`` into windows of at most ``window`` lines and ``max_chars`` characters.

    Every line of the file is covered by at least one chunk (a line longer than ``max_chars`` by its
    first ``max_chars`` characters); consecutive chunks overlap by up to ``overlap`` lines. Blank-only
    files give no chunks. Each chunk's symbol is the first definition a regular expression finds in it.
    """
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        return []
    return [
        Chunk(start, end, piece, symbol, _header(path, symbol))
        for start, end, piece, symbol in _windows(
            lines, 0, len(lines), window=window, overlap=overlap, max_chars=max_chars
        )
    ]


def _header(path: str, *parts: str | None) -> str:
    return HEADER_SEPARATOR.join(part for part in (path, *parts) if part)


def _windows(
    lines: list[str], begin: int, total: int, *, window: int, overlap: int, max_chars: int
) -> list[tuple[int, int, str, str | None]]:
    """Windows ``(start_line, end_line, text, symbol)`` over ``lines[begin:total]`` (1-based line numbers)."""
    step_floor = max(1, window - overlap)
    chunks: list[tuple[int, int, str, str | None]] = []
    start = begin
    while start < total:
        end = min(total, start + window)
        if end < total:
            # Prefer to end just before a top-level definition or after a blank line in the last third.
            for cut in range(end, start + max(step_floor // 2, 1), -1):
                candidate = lines[cut] if cut < total else ""
                if _DEFINITION.match(candidate) or not lines[cut - 1].strip():
                    end = cut
                    break
        body = lines[start:end]
        piece = "\n".join(body)
        while len(piece) > max_chars and len(body) > 1:
            body = body[: max(1, len(body) // 2)]
            piece = "\n".join(body)
            end = start + len(body)
        if len(piece) > max_chars:
            piece = piece[:max_chars]
        if piece.strip():
            chunks.append((start + 1, end, piece, _symbol_of(body)))
        if end >= total:
            break
        start = max(end - overlap, start + 1)
    return chunks


def chunk_file(path: str, text: str, language: str, *, window: int, overlap: int, max_chars: int) -> list[Chunk]:
    """Chunk one file: along its syntax where a grammar parses it cleanly, else in line windows.

    ``text`` is the decoded file (undecodable bytes already replaced); ``language`` is
    :func:`actors.scanning.language_of`'s name for ``path``. Every non-blank line lies in some chunk
    (a line longer than ``max_chars`` by its first ``max_chars`` characters), every chunk's text is
    exactly the lines its range names, at most ``window`` lines and ``max_chars`` characters.
    """
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        return []
    spans = plan_spans(path, lines, language, Limits(window=window, overlap=overlap, max_chars=max_chars))
    if spans is None:
        return chunk_text(text, window=window, overlap=overlap, max_chars=max_chars, path=path)
    chunks: list[Chunk] = []
    for span in spans:
        if span.fits:
            body = "\n".join(lines[span.start_line - 1 : span.end_line])
            chunks.append(Chunk(span.start_line, span.end_line, body, span.symbol, span.header))
            continue
        # Too big for one chunk: windows that all keep the definition's name and header.
        for start, end, piece, _ in _windows(
            lines, span.start_line - 1, span.end_line, window=window, overlap=overlap, max_chars=max_chars
        ):
            chunks.append(Chunk(start, end, piece, span.symbol, span.header))
    return chunks


def embedding_text(header: str, body: str) -> str:
    """What the embedder sees: the header (file path, symbol) improves retrieval of file-level questions."""
    return f"{header}\n{body}"
