"""Property tests: whatever a client sends as a tool argument, validation answers with a
``ValidationError`` (shown verbatim to the client) or a valid value, never another exception.

The messages must also be safe to send: bounded in length and encodable as UTF-8 (a lone
surrogate echoed back would break the JSON-RPC response, not just the call).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import CallerError, ValidationError
from server.service import (
    MAX_LIST_LIMIT,
    MAX_SEARCH_LIMIT,
    normalize_filter_path,
    parse_job_id,
    validate_limit,
    validate_repo_path,
    validate_text,
)

#: Anything JSON can carry, which is what an MCP client can send before the SDK's type check.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
#: Strings with the characters that break things: NUL, lone surrogates, separators, dots, huge lengths.
nasty_text = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["/", ".", "..", "\x00", "\udc80", "~", " ", "a", "\n", "é"]), max_size=30).map("".join),
    st.builds(lambda n: "/" + "a" * n, st.integers(min_value=200, max_value=20_000)),
    st.builds(lambda n: "/" + "/".join(["x"] * n), st.integers(min_value=1, max_value=3000)),
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_sendable(error: CallerError) -> None:
    message = str(error)
    assert message.startswith("validation error: ")
    message.encode("utf-8")  # raises on a lone surrogate
    assert len(message) < 2000


@PROPERTY_SETTINGS
@given(job_id=st.one_of(json_values, nasty_text, st.uuids().map(str)))
def test_job_ids_parse_or_raise_validation_error(job_id: Any) -> None:
    try:
        parsed = parse_job_id(job_id)
    except ValidationError as error:
        assert_sendable(error)
        assert "not a valid UUID" in str(error)
        return
    assert isinstance(parsed, uuid.UUID)
    assert isinstance(job_id, str)


@given(job=st.uuids(), upper=st.booleans(), pad=st.sampled_from(["", " ", "\n", "\t "]))
def test_every_uuid_spelling_parses(job: uuid.UUID, upper: bool, pad: str) -> None:
    text = str(job).upper() if upper else str(job)
    assert parse_job_id(f"{pad}{text}{pad}") == job


@PROPERTY_SETTINGS
@given(limit=st.one_of(json_values, st.integers(min_value=-(10**30), max_value=10**30)))
@pytest.mark.parametrize("maximum", [MAX_SEARCH_LIMIT, MAX_LIST_LIMIT])
def test_limits_are_integers_in_range_or_validation_errors(limit: Any, maximum: int) -> None:
    try:
        value = validate_limit(limit, maximum)
    except ValidationError as error:
        assert_sendable(error)
        assert "limit" in str(error)
        return
    assert type(limit) is int
    assert 1 <= value <= maximum


@PROPERTY_SETTINGS
@given(value=st.one_of(json_values, nasty_text), allow_empty=st.booleans())
def test_text_arguments_are_storable_or_validation_errors(value: Any, allow_empty: bool) -> None:
    try:
        text = validate_text("query", value, max_chars=8000, allow_empty=allow_empty)
    except ValidationError as error:
        assert_sendable(error)
        assert "query" in str(error)
        return
    # What PostgreSQL text columns and the embedder's JSON need.
    assert "\x00" not in text
    text.encode("utf-8")
    assert len(text) <= 8000


@pytest.fixture(scope="module")
def roots() -> tuple[Path, Path]:
    base = Path(tempfile.mkdtemp(prefix="cbm-prop-")).resolve()
    (base / "allowed" / "repo").mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "allowed" / "file.txt").write_text("x", encoding="utf-8")
    os.symlink(base / "outside", base / "allowed" / "escape")
    os.symlink(base / "allowed" / "loop-a", base / "allowed" / "loop-b")
    os.symlink(base / "allowed" / "loop-b", base / "allowed" / "loop-a")
    return base, base / "allowed"


def _under(base: Path) -> st.SearchStrategy[str]:
    parts = st.sampled_from(["allowed", "outside", "repo", "file.txt", "escape", "loop-a", "..", ".", "", "x\x00"])
    return st.lists(parts, max_size=6).map(lambda items: str(base) + "/" + "/".join(items))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_repo_paths_resolve_inside_the_roots_or_raise_validation_error(roots: tuple[Path, Path], data: Any) -> None:
    base, allowed = roots
    repo_path = data.draw(st.one_of(json_values, nasty_text, _under(base)))
    restrict = data.draw(st.booleans())
    try:
        resolved = validate_repo_path(repo_path, [allowed] if restrict else [])
    except ValidationError as error:
        assert_sendable(error)
        return
    assert resolved.is_absolute()
    assert resolved.is_dir()
    assert resolved == resolved.resolve()
    if restrict:
        assert resolved.is_relative_to(allowed)


@PROPERTY_SETTINGS
@given(value=st.one_of(json_values, nasty_text))
def test_filter_paths_normalise_or_raise_validation_error(value: Any) -> None:
    try:
        normalised = normalize_filter_path(value)
    except ValidationError as error:
        assert_sendable(error)
        return
    assert isinstance(normalised, str)
    normalised.encode("utf-8")
