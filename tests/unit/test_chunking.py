"""``actors.chunking``: line windows, their bounds, coverage, overlap and symbols."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.chunking import Chunk, chunk_text, embedding_text
from tests.unit.helpers import run_with_timeout

# Characters str.splitlines() treats as line breaks besides "\n"; kept out of the generated texts so that
# "line N" means the same thing to the chunker and to the reference below (see the xfail test for them).
_OTHER_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _check_invariants(text: str, chunks: list[Chunk], *, window: int, overlap: int, max_chars: int) -> None:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    previous: Chunk | None = None
    for chunk in chunks:
        # 1-based, inclusive, inside the file, at most one window long.
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines), chunk
        assert chunk.end_line - chunk.start_line + 1 <= window, chunk
        # Never longer than the cap, never empty, and the text is exactly the lines the range names.
        assert len(chunk.text) <= max_chars
        assert chunk.text.strip()
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])[:max_chars]
        if previous is not None:
            # Moves forward, and overlaps its predecessor by at most ``overlap`` lines.
            assert chunk.start_line > previous.start_line
            assert previous.end_line - chunk.start_line + 1 <= overlap
        previous = chunk
    # Coverage: a line may be left out only if it holds nothing to index within the cap.
    covered: set[int] = set()
    for chunk in chunks:
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    for number, line in enumerate(lines, start=1):
        if number not in covered:
            assert not line[:max_chars].strip(), f"line {number} ({line[:40]!r}) is in no chunk"


def _numbered(count: int) -> str:
    return "".join(f"value_{i} = {i}\n" for i in range(1, count + 1))


# --- coverage, bounds and overlap --------------------------------------------------------------


def test_every_line_of_a_dense_file_is_covered() -> None:
    text = _numbered(137)
    chunks = chunk_text(text, window=20, overlap=4, max_chars=2000)
    covered: set[int] = set()
    for chunk in chunks:
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    assert covered == set(range(1, 138))
    assert chunks[0].start_line == 1
    assert chunks[-1].end_line == 137
    _check_invariants(text, chunks, window=20, overlap=4, max_chars=2000)


def test_windows_overlap_by_exactly_the_overlap_when_nothing_suggests_a_cut() -> None:
    # No blank lines and no definitions: plain windows of 10 lines, each starting 3 lines before the last ended.
    chunks = chunk_text(_numbered(40), window=10, overlap=3, max_chars=2000)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 10), (8, 17), (15, 24), (22, 31), (29, 38), (36, 40)]


def test_zero_overlap_gives_disjoint_adjacent_windows() -> None:
    chunks = chunk_text(_numbered(25), window=10, overlap=0, max_chars=2000)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 10), (11, 20), (21, 25)]


def test_line_numbers_are_one_based_and_inclusive() -> None:
    chunks = chunk_text("only line", window=5, overlap=1, max_chars=200)
    assert chunks == [Chunk(1, 1, "only line", None)]
    chunks = chunk_text("first\nsecond\n", window=5, overlap=1, max_chars=200)
    assert [(c.start_line, c.end_line, c.text) for c in chunks] == [(1, 2, "first\nsecond")]


def test_windows_prefer_to_end_before_a_definition() -> None:
    lines = [f"    step_{i}()" for i in range(15)] + ["def second():"] + [f"    more_{i}()" for i in range(24)]
    chunks = chunk_text("\n".join(lines), window=20, overlap=0, max_chars=5000)
    assert (chunks[0].start_line, chunks[0].end_line) == (1, 15)
    assert chunks[1].start_line == 16
    assert chunks[1].text.startswith("def second():")
    assert chunks[1].symbol == "second"


def test_chunks_respect_max_chars_by_taking_fewer_lines() -> None:
    text = "".join(f"{i:03d}" + "x" * 96 + "\n" for i in range(50))  # 100-char lines
    chunks = chunk_text(text, window=40, overlap=2, max_chars=350)
    assert all(len(c.text) <= 350 for c in chunks)
    # Lines are shortened by taking fewer of them, not by cutting lines in half.
    assert all(c.end_line - c.start_line + 1 <= 3 for c in chunks)
    assert all(len(line) == 99 for c in chunks for line in c.text.split("\n"))
    _check_invariants(text, chunks, window=40, overlap=2, max_chars=350)


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n  ", "\n\n\n\n", " " * 5000])
def test_blank_only_file_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, window=40, overlap=5, max_chars=2000) == []


def test_leading_and_trailing_blank_lines_keep_true_line_numbers() -> None:
    text = "\n\n\nx = 1\ny = 2\n\n\n"
    chunks = chunk_text(text, window=40, overlap=5, max_chars=2000)
    assert len(chunks) == 1
    assert chunks[0].start_line == 1
    assert "x = 1\ny = 2" in chunks[0].text
    assert chunks[0].text.split("\n")[3] == "x = 1"  # line 4 of the file is line 4 of the chunk


def test_windows_of_only_blank_lines_are_dropped_but_code_after_them_keeps_its_line_number() -> None:
    text = "a = 1\n" + "\n" * 100 + "b = 2\n"
    chunks = chunk_text(text, window=10, overlap=0, max_chars=2000)
    _check_invariants(text, chunks, window=10, overlap=0, max_chars=2000)
    holding_b = [c for c in chunks if "b = 2" in c.text]
    assert len(holding_b) == 1
    chunk = holding_b[0]
    assert chunk.text.split("\n")[102 - chunk.start_line] == "b = 2"


def test_crlf_line_endings_count_one_line_each() -> None:
    text = "a = 1\r\nb = 2\r\nc = 3\r\n"
    chunks = chunk_text(text, window=5, overlap=0, max_chars=200)
    assert [(c.start_line, c.end_line, c.text) for c in chunks] == [(1, 3, "a = 1\nb = 2\nc = 3")]


@pytest.mark.parametrize("separator", ["\x0c", "\x0b", "\r", "\x85", "\u2028"])
def test_line_numbers_follow_newlines_only(separator: str) -> None:
    # Form feeds (page breaks) are common in C, Emacs Lisp and older Python sources.
    file_lines = [f"line_{i} = {i}" for i in range(1, 21)]
    file_lines[1] = f"line_2 = 2{separator}# page two"
    text = "\n".join(file_lines) + "\n"
    chunks = chunk_text(text, window=5, overlap=0, max_chars=2000)
    last_line = chunks[-1].end_line
    assert last_line == 20
    target = next(c for c in chunks if "line_20 = 20" in c.text)
    assert target.text.split("\n")[20 - target.start_line] == "line_20 = 20"


# --- very long lines -----------------------------------------------------------------------------


def test_a_ten_megabyte_single_line_is_capped_and_fast() -> None:
    text = "x" * 10_000_000
    started = time.perf_counter()
    chunks = run_with_timeout(lambda: chunk_text(text, window=40, overlap=5, max_chars=2000), seconds=10)
    elapsed = time.perf_counter() - started
    assert len(chunks) == 1
    assert (chunks[0].start_line, chunks[0].end_line) == (1, 1)
    assert chunks[0].text == "x" * 2000
    assert elapsed < 5


def test_a_ten_megabyte_line_between_normal_lines() -> None:
    text = "before = 1\n" + "y" * 10_000_000 + "\nafter = 2\n"
    chunks = run_with_timeout(lambda: chunk_text(text, window=40, overlap=5, max_chars=2000), seconds=10)
    assert all(len(c.text) <= 2000 for c in chunks)
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    assert covered == {1, 2, 3}
    assert any("after = 2" in c.text for c in chunks)
    assert any(c.text.startswith("before = 1") for c in chunks)


# --- symbols -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "symbol"),
    [
        ("def parse_header(data):\n    return data\n", "parse_header"),
        ("class InvoiceParser:\n    pass\n", "InvoiceParser"),
        ("async def fetch_rows(conn):\n    return []\n", "fetch_rows"),
        ("class Outer:\n    def method(self):\n        pass\n", "Outer"),
        ("import os\n\n\nclass Later(Base):\n    x = 1\n", "Later"),
        ("x = 1\n    def indented_method(self):\n        pass\n", "indented_method"),
        ("function renderPage(props) {\n  return 1;\n}\n", "renderPage"),
        ("func ServeHTTP(w http.ResponseWriter) {\n}\n", "ServeHTTP"),
        ("pub fn build_index() -> u32 {\n    0\n}\n", "build_index"),
    ],
)
def test_symbol_is_the_first_definition_in_the_chunk(source: str, symbol: str) -> None:
    chunks = chunk_text(source, window=40, overlap=5, max_chars=2000)
    assert len(chunks) == 1
    assert chunks[0].symbol == symbol


@pytest.mark.parametrize(
    "source",
    [
        "x = 1\ny = 2\n",
        "# def not_a_definition():\n",
        "undefined_name = 3\n",  # "def" must be a whole word
        "classify(items)\n",  # so must "class"
        "print('def inside string')\n",
    ],
)
def test_no_symbol_without_a_definition(source: str) -> None:
    chunks = chunk_text(source, window=40, overlap=5, max_chars=2000)
    assert len(chunks) == 1
    assert chunks[0].symbol is None


def test_each_chunk_gets_the_symbol_of_its_own_lines() -> None:
    text = "def first():\n" + "    a()\n" * 8 + "\ndef second():\n" + "    b()\n" * 8
    chunks = chunk_text(text, window=10, overlap=0, max_chars=2000)
    assert [c.symbol for c in chunks] == ["first", "second"]


# --- embedding_text ------------------------------------------------------------------------------


def test_embedding_text_puts_the_path_on_its_own_first_line() -> None:
    body = "def f():\n    return 1"
    combined = embedding_text("src/pkg/module.py", body)
    header, _, rest = combined.partition("\n")
    assert header == "src/pkg/module.py"
    assert rest == body


# --- properties ----------------------------------------------------------------------------------

_safe_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\n" + _OTHER_LINE_BREAKS)
_line = st.one_of(
    st.text(_safe_chars, max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "\t  ",
            "def handler(event):",
            "class Model(Base):",
            "    return value",
            "async def main():",
            "    def method(self):",
            "}",
            "export function f() {",
        ]
    ),
    st.integers(min_value=150, max_value=900).map(lambda n: "w" * n),
    st.integers(min_value=150, max_value=900).map(lambda n: " " * n + "tail"),
)
_text = st.builds(
    lambda lines, newline: "\n".join(lines) + ("\n" if newline else ""),
    st.lists(_line, max_size=150),
    st.booleans(),
)


@hsettings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_text,
    window=st.integers(min_value=1, max_value=50),
    overlap=st.integers(min_value=0, max_value=55),
    max_chars=st.integers(min_value=20, max_value=1200),
)
def test_property_bounds_coverage_and_overlap(text: str, window: int, overlap: int, max_chars: int) -> None:
    chunks = chunk_text(text, window=window, overlap=overlap, max_chars=max_chars)
    _check_invariants(text, chunks, window=window, overlap=overlap, max_chars=max_chars)
    if not text.strip():
        assert chunks == []


@hsettings(max_examples=200, deadline=None, database=None)
@given(
    lines=st.lists(st.text(_safe_chars, min_size=1, max_size=40).filter(lambda s: s.strip()), min_size=1, max_size=200),
    window=st.integers(min_value=5, max_value=60),
    overlap=st.integers(min_value=0, max_value=10),
)
def test_property_without_blank_lines_every_line_is_covered(lines: list[str], window: int, overlap: int) -> None:
    text = "\n".join(lines) + "\n"
    chunks = chunk_text(text, window=window, overlap=overlap, max_chars=100_000)
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    assert covered == set(range(1, len(lines) + 1))
    # Symbols, when reported, name a definition that is really in the chunk.
    for chunk in chunks:
        if chunk.symbol is not None:
            assert chunk.symbol in chunk.text


# --- headers -------------------------------------------------------------------------------------


def test_line_window_headers_name_the_file_and_the_symbol() -> None:
    chunks = chunk_text("def first():\n    a()\n\nx = 1\n", window=2, overlap=0, max_chars=200, path="pkg/m.py")
    assert [(c.symbol, c.header) for c in chunks] == [("first", "pkg/m.py · first"), (None, "pkg/m.py")]
