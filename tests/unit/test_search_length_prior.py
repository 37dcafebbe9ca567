"""Hits with little code under more comment (a getter under its doc comment) are demoted; short plain code,
tests and prose are not."""

from __future__ import annotations

from dataclasses import replace

from server.search import Hit, Ranking, code_lines, demote_short, line_kinds, overlapping_chain

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


IMPORT_BLOCKS = """from __future__ import annotations
import os
from urllib3.exceptions import (
    ConnectTimeoutError,
    ReadTimeoutError,
)
import {
\tTimeoutError,
} from './errors.js';
import type {Options} from './options.js';
export {TimeoutError} from './errors.js';
const got = require('got');
package cobra
use std::io::{self, Read};
DEFAULT_TIMEOUT = 10"""


def test_import_statements_count_as_comment_only_when_asked() -> None:
    # 14 import lines (multi-line ones over all their lines) in six languages, one line of code.
    assert line_kinds(IMPORT_BLOCKS, imports=True) == (1, 14)
    assert line_kinds(IMPORT_BLOCKS) == (15, 0)
    # Code that merely mentions the words is still code.
    assert line_kinds("important = 1\nfrom_x = importer()\npackages = []", imports=True) == (3, 0)


def test_a_module_header_of_imports_counts_as_little_code() -> None:
    header = hit("imports", IMPORT_BLOCKS, 0.10)
    worker = hit("worker", body(12), 0.08)
    assert [h.symbol for h in demote_short([header, worker], Ranking())] == ["worker", "imports"]
    assert [h.symbol for h in demote_short([header, worker], Ranking(short_imports=False))] == ["imports", "worker"]


def test_a_window_is_judged_by_its_whole_definition() -> None:
    # The middle window of a function with a long docstring: alone, its lines read as code (it
    # starts inside the docstring); the whole definition is two code lines under 40 of prose.
    prose = [f"    :param p{number}: what p{number} does." for number in range(40)]
    definition = [
        "def request(method, url):",
        '    """Send a request.',
        *prose,
        '    """',
        "    return send(method, url)",
    ]
    window = replace(hit("request", "\n".join(definition[10:30]), 0.10), chunk_id=7)
    worker = hit("worker", body(12), 0.08)
    assert [h.symbol for h in demote_short([window, worker], Ranking())] == ["request", "worker"]
    whole = {window.chunk_id: "\n".join(definition)}
    ranked = demote_short([window, worker], Ranking(), whole)
    assert [h.symbol for h in ranked] == ["worker", "request"] and ranked[1].score == 0.05


def test_equal_scores_are_ordered_by_the_tie_break() -> None:
    struct = hit("fields", commented(4) + "\n" + body(4), 0.17)  # 8 code lines, 4 comment lines
    function = hit("function", body(20), 0.17)
    vector_first = replace(struct, vector_rank=1, text_rank=2)
    text_first = replace(function, vector_rank=2, text_rank=1)
    hits = [vector_first, text_first]
    assert [h.symbol for h in demote_short(hits, Ranking(tie_break="rank"))] == ["fields", "function"]
    assert [h.symbol for h in demote_short(hits, Ranking(tie_break="code"))] == ["function", "fields"]
    assert [h.symbol for h in demote_short(hits, Ranking(tie_break="text"))] == ["function", "fields"]
    assert [h.symbol for h in demote_short(hits, Ranking(tie_break="vector"))] == ["fields", "function"]
    # Only ties: a better score keeps its place whatever the tie-break.
    better = replace(vector_first, score=0.18)
    assert [h.symbol for h in demote_short([text_first, better], Ranking(tie_break="code"))] == ["fields", "function"]


def test_the_windows_of_a_definition_are_the_ranges_linked_by_overlaps() -> None:
    windows = [(1, 40, "a"), (36, 75, "b"), (71, 90, "c")]
    setter = (92, 99, "set")  # the same name, not overlapping: another definition
    assert overlapping_chain(windows[2], [windows[0], setter, windows[1]]) == [windows[2], windows[1], windows[0]]
    assert overlapping_chain(setter, windows) == [setter]
