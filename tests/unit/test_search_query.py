"""How a search query becomes full-text terms, and which path prefixes are accepted."""

from __future__ import annotations

import pytest

from server.errors import ValidationError
from server.search import MAX_TERMS, identifier_parts, text_query_terms, tsquery_source
from server.service import normalize_path_prefix


@pytest.mark.parametrize(
    ("word", "parts"),
    [
        ("getUserName", ["get", "User", "Name"]),
        ("HTTPServerV2", ["HTTP", "Server", "V", "2"]),
        ("parse_csv_line", ["parse", "csv", "line"]),
        ("plain", ["plain"]),
    ],
)
def test_identifier_parts(word: str, parts: list[str]) -> None:
    assert identifier_parts(word) == parts


def test_terms_keep_the_word_and_add_its_parts_once() -> None:
    assert text_query_terms("where is getUserName used? user name") == [
        "where",
        "is",
        "getUserName",
        "get",
        "User",
        "Name",
        "used",
    ]


def test_terms_are_safe_tsquery_operands() -> None:
    terms = text_query_terms("a|b & !c <-> 'd' (e) :* f\\g")
    assert all(term.replace("_", "").isalnum() for term in terms)
    assert tsquery_source(terms) == "a | b | c | d | e | f | g"
    assert text_query_terms("   ?!  ") == []


def test_terms_are_capped() -> None:
    assert len(text_query_terms(" ".join(f"word{index}" for index in range(500)))) == MAX_TERMS


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("", None), ("src/", "src/"), ("./src/api", "src/api"), ("src\\api\\", "src/api/")],
)
def test_path_prefix_normalised(given: str | None, expected: str | None) -> None:
    assert normalize_path_prefix(given) == expected


@pytest.mark.parametrize("bad", ["/etc", "C:/x", "src/../..", "..", "a\x00b"])
def test_path_prefix_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        normalize_path_prefix(bad)


def test_non_ascii_words_become_terms() -> None:
    # Cyrillic and CJK words must reach full-text search (an ASCII-only word pattern dropped them).
    assert text_query_terms("повторить запрос 再試行 getUserName") == [
        "повторить",
        "запрос",
        "再試行",
        "getUserName",
        "get",
        "User",
        "Name",
    ]
