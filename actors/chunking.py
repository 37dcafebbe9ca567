"""Split a source file into chunks that carry their file, line range and language.

Line windows with overlap, cut preferably at a blank line or a top-level definition so a chunk
tends to hold whole functions. (Structure-aware chunking with tree-sitter is a later step.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEFINITION = re.compile(
    r"^(?:async\s+def|def|class|function|func|fn|pub\s+fn|impl|struct|interface|type|export|public|private|protected)\b"
)


@dataclass(frozen=True, slots=True)
class Chunk:
    start_line: int  # 1-based, inclusive
    end_line: int  # inclusive
    text: str
    symbol: str | None


_SYMBOL = re.compile(r"^\s*(?:async\s+def|def|class|function|func|fn|pub\s+fn|struct|interface)\s+([A-Za-z_][\w]*)")


def _symbol_of(lines: list[str]) -> str | None:
    for line in lines:
        match = _SYMBOL.match(line)
        if match:
            return match.group(1)
    return None


def chunk_text(text: str, *, window: int, overlap: int, max_chars: int) -> list[Chunk]:
    """Chunk ``text`` into windows of at most ``window`` lines and ``max_chars`` characters.

    Every line of the file is covered by at least one chunk; consecutive chunks overlap by up to
    ``overlap`` lines. Blank-only files give no chunks.
    """
    # Only "\n" ends a line, as for editors and git; str.splitlines would also split on \f, \v, \x85...
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        return []
    step_floor = max(1, window - overlap)
    chunks: list[Chunk] = []
    start = 0
    total = len(lines)
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
            chunks.append(Chunk(start + 1, end, piece, _symbol_of(body)))
        if end >= total:
            break
        start = max(end - overlap, start + 1)
    return chunks


def chunk_header(path: str, chunk: Chunk) -> str:
    """A one-line description of the chunk: its file, and its symbol where known."""
    return f"{path} {chunk.symbol}" if chunk.symbol else path


def embedding_text(header: str, body: str) -> str:
    """What the embedder sees: the header (file path, symbol) improves retrieval of file-level questions."""
    return f"{header}\n{body}"
