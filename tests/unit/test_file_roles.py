"""File roles from path conventions, per language, and the roles each search scope returns."""

from __future__ import annotations

import pytest

from models.roles import ROLES, SCOPE_ROLES, SCOPES, file_role, roles_for


@pytest.mark.parametrize(
    ("path", "role"),
    [
        # Python
        ("src/requests/sessions.py", "code"),
        ("tests/test_requests.py", "test"),
        ("pkg/test_utils.py", "test"),
        ("pkg/utils_test.py", "test"),
        ("conftest.py", "test"),
        ("tests/testserver/server.py", "test"),
        ("docs/conf.py", "code"),  # source code stays code, even under docs/
        ("docs/user/quickstart.rst", "docs"),
        # Go
        ("command.go", "code"),
        ("command_test.go", "test"),
        ("doc/man_docs.go", "code"),  # Go's doc package is code
        ("doc/man_docs_test.go", "test"),
        ("internal/testdata/cases.json", "fixture"),
        ("site/content/completions/_index.md", "docs"),
        # TypeScript / JavaScript
        ("source/core/index.ts", "code"),
        ("test/redirects.ts", "test"),
        ("src/widget.spec.ts", "test"),
        ("src/widget.test.tsx", "test"),
        ("src/__tests__/widget.js", "test"),
        ("src/types.test-d.ts", "test"),
        ("src/__snapshots__/widget.test.ts.snap", "fixture"),
        ("test/fixtures/ok.json", "fixture"),
        ("documentation/2-options.md", "docs"),
        ("examples/h2.js", "example"),
        # Java, Ruby, C#, Rust
        ("src/main/java/app/Parser.java", "code"),
        ("src/test/java/app/ParserTest.java", "test"),
        ("spec/models/user_spec.rb", "test"),
        ("App.Tests/ParserTests.cs", "test"),
        ("tests/integration.rs", "test"),
        # Prose anywhere
        ("README.md", "docs"),
        ("CHANGELOG", "docs"),
        ("LICENSE", "docs"),
        ("HISTORY.md", "docs"),
        ("Makefile", "code"),
        ("", "code"),
    ],
)
def test_role_by_path(path: str, role: str) -> None:
    assert file_role(path) == role


def test_windows_separators_are_understood() -> None:
    assert file_role("tests\\unit\\test_x.py") == "test"


def test_every_scope_maps_to_known_roles() -> None:
    assert set(SCOPES) == set(SCOPE_ROLES)
    assert set(SCOPE_ROLES["all"]) == set(ROLES)
    for roles in SCOPE_ROLES.values():
        assert set(roles) <= set(ROLES)


@pytest.mark.parametrize(
    ("scope", "query", "roles"),
    [
        ("code", "where are redirects followed", ("code",)),
        ("code", "which tests cover redirects", ("code", "test", "fixture")),
        ("code", "documentation of the timeout option", ("code", "docs", "example")),
        ("code", "latest attestation", ("code",)),  # a word containing "test" is not a request for tests
        ("tests", "where are redirects followed", ("test", "fixture")),
        ("docs", "redirects", ("docs", "example")),
        ("all", "tests", ROLES),
    ],
)
def test_roles_for_a_query(scope: str, query: str, roles: tuple[str, ...]) -> None:
    assert roles_for(scope, query) == roles  # type: ignore[arg-type]
