"""Hits with little code under more comment (a getter under its doc comment) are demoted; short plain code,
tests and prose are not."""

from __future__ import annotations

from server.search import Hit, Ranking, code_lines, demote_short, line_kinds

GETTER_UNDER_JSDOC = """\t/**
\tThrow an error if the server response's `content-length` header value doesn't match.

\t__Note__: a `ReadError` with code `ERR_HTTP_CONTENT_LENGTH_MISMATCH` will be thrown.
\t*/
\tget strictContentLength() {
\t\treturn this.#internals.strictContentLength;
\t}"""

PYTHON_WITH_DOCSTRING = '''def guess(data):
    """
    :rtype: str
    """
    # a comment line
    sample = data[:4]
    if sample:
        return "utf-32"
    return None'''


def hit(name: str, content: str, score: float, role: str = "code", language: str = "typescript") -> Hit:
    lines = content.count("\n") + 1
    return Hit(0, "r", "/r", f"{name}.x", 1, lines, language, name, content, score, 1, 1, role)


def body(lines: int) -> str:
    return "\n".join(f"x{number} = {number}" for number in range(lines))


def commented(lines: int) -> str:
    """``lines`` of code, each under a comment line."""
    return "\n".join(f"// what x{number} is for\nx{number} = {number}" for number in range(lines))


def test_code_lines_skip_blank_comment_and_docstring_lines() -> None:
    assert code_lines(GETTER_UNDER_JSDOC) == 3
    assert code_lines(PYTHON_WITH_DOCSTRING) == 5
    assert code_lines('x = 1\n"""one-line docstring"""\n// go comment\n# python comment\n\ny = 2') == 2
    assert code_lines("/* a\n still comment\n*/\nint x;") == 1
    assert line_kinds(GETTER_UNDER_JSDOC) == (3, 5)
    assert line_kinds(PYTHON_WITH_DOCSTRING) == (5, 4)


def test_a_short_chunk_under_a_long_comment_drops_below_the_code_that_does_the_work() -> None:
    getter = hit("getter", GETTER_UNDER_JSDOC, 0.10)
    worker = hit("worker", body(12), 0.08)
    ranked = demote_short([getter, worker], Ranking())
    assert [h.symbol for h in ranked] == ["worker", "getter"]
    assert ranked[1].score == 0.05  # short_factor 0.5 of its score
    # Off, or counting every line (13 lines >= 8): the getter keeps its place.
    assert [h.symbol for h in demote_short([getter, worker], Ranking(short_lines=0))] == ["getter", "worker"]
    assert [h.symbol for h in demote_short([getter, worker], Ranking(short_code_only=False))] == ["getter", "worker"]


def test_short_plain_code_tests_prose_and_long_chunks_keep_their_scores_and_order() -> None:
    hits = [
        hit("test", commented(3), 0.10, role="test"),
        hit("readme", "# Heading\n* a bullet", 0.09, role="docs", language="markdown"),
        hit("long", commented(8), 0.08),
        hit("plain", body(2), 0.07),  # a two-line function without comments: what it is is its code
    ]
    ranked = demote_short(hits, Ranking())
    assert [h.symbol for h in ranked] == ["test", "readme", "long", "plain"]
    assert [h.score for h in ranked] == [0.10, 0.09, 0.08, 0.07]
    # Counting any short chunk, whatever its comments: the plain one drops too.
    assert demote_short(hits, Ranking(short_comment_ratio=0.0))[3].score == 0.035


def test_a_negative_score_moves_down_too() -> None:
    # Vector mode scores 1 - cosine distance, which can be below zero.
    ranked = demote_short([hit("short", commented(2), -0.2), hit("long", body(9), -0.3)], Ranking())
    assert [h.symbol for h in ranked] == ["long", "short"]
    assert ranked[1].score < -0.2
