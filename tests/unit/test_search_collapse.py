"""Overlapping hits of one file collapse into one; touching or other-file hits stay apart."""

from __future__ import annotations

from server.search import Hit, collapse_overlapping, query_identifiers


def hit(start: int, end: int, score: float, path: str = "a.go", repo: str = "/r") -> Hit:
    body = "\n".join(f"line {number}" for number in range(start, end + 1))
    return Hit(0, "r", repo, path, start, end, "go", f"s{start}", body, score, None, 1)


def spans(hits: list[Hit]) -> list[tuple[str, int, int]]:
    return [(h.file_path, h.start_line, h.end_line) for h in hits]


def test_windows_of_one_function_become_one_hit_in_the_best_place() -> None:
    merged = collapse_overlapping([hit(36, 75, 0.9), hit(1, 10, 0.8, "b.go"), hit(1, 40, 0.5)])
    assert spans(merged) == [("a.go", 1, 75), ("b.go", 1, 10)]
    assert merged[0].score == 0.9 and merged[0].symbol == "s36, s1"
    assert merged[0].content == "\n".join(f"line {number}" for number in range(1, 76))


def test_a_window_between_two_groups_joins_them() -> None:
    # 71-77 and 1-40 do not overlap; 36-75 overlaps both, so all three are one function's windows.
    merged = collapse_overlapping([hit(71, 77, 0.9), hit(1, 40, 0.8), hit(36, 75, 0.7)])
    assert spans(merged) == [("a.go", 1, 77)]


def test_touching_definitions_and_other_files_stay_apart() -> None:
    hits = [hit(1, 10, 0.9), hit(11, 20, 0.8), hit(1, 10, 0.7, "b.go"), hit(1, 10, 0.6, "a.go", "/other")]
    assert spans(collapse_overlapping(hits)) == spans(hits)


def test_query_identifiers_are_backticked_or_shaped_like_code() -> None:
    query = "where is `REQUESTS_CA_BUNDLE` read, and copyPipedHeaders or HTTPServer, not plain words or `x.y`"
    assert query_identifiers(query) == ["REQUESTS_CA_BUNDLE", "x", "y", "copyPipedHeaders", "HTTPServer"]
    assert query_identifiers("повторить_запрос and how") == ["повторить_запрос"]
