"""What a file is for, from its path alone: implementation, test, fixture, example or documentation.

Search ranks implementation first (``search_code``'s ``scope``), so a question such as "where are
redirects followed" answers with the code that follows them rather than the tests that check it or
the page that explains it. The role is decided once, when the file is stored, by path conventions
that hold across languages (``tests/``, ``__tests__/``, ``docs/``, ``examples/``...) and per language
(``test_*.py``, ``*_test.go``, ``*.spec.ts``, ``*Test.java``, ``*_spec.rb``...).
"""

from __future__ import annotations

import re
from typing import Literal

Role = Literal["code", "test", "fixture", "example", "docs"]
ROLES: tuple[Role, ...] = ("code", "test", "fixture", "example", "docs")

Scope = Literal["code", "tests", "docs", "all"]
SCOPES: tuple[Scope, ...] = ("code", "tests", "docs", "all")
#: The roles each ``scope`` of ``search_code`` returns.
SCOPE_ROLES: dict[Scope, tuple[Role, ...]] = {
    "code": ("code",),
    "tests": ("test", "fixture"),
    "docs": ("docs", "example"),
    "all": ROLES,
}

_TEST_DIRS = frozenset({"test", "tests", "__tests__", "spec", "specs", "testing", "e2e", "test-d", "integration_tests"})
_FIXTURE_DIRS = frozenset(
    {"fixtures", "fixture", "__fixtures__", "testdata", "test_data", "test-data", "__snapshots__", "__mocks__", "mocks"}
)
_EXAMPLE_DIRS = frozenset({"examples", "example", "_examples", "samples", "sample", "demo", "demos", "cookbook"})
_DOC_DIRS = frozenset({"docs", "doc", "documentation", "_docs", "site", "man", "wiki"})
#: Prose and markup, whatever folder holds it.
_DOC_SUFFIXES = frozenset({".md", ".markdown", ".mdx", ".rst", ".adoc", ".asciidoc", ".txt", ".rdoc", ".org", ".tex"})
#: Prose files without a suffix, by name (upper-cased).
_DOC_NAMES = frozenset(
    {"README", "CHANGELOG", "CHANGES", "HISTORY", "LICENSE", "LICENCE", "AUTHORS", "CONTRIBUTING", "NOTICE", "COPYING"}
)
#: Test files by name: Python, Go, JS/TS, Java/Kotlin/C#, Ruby, Elixir, PHP, C/C++, Rust benches aside.
_TEST_FILE = re.compile(
    r"^(?:test_.+\.py|.+_test\.py|conftest\.py|.+_test\.go|.+\.(?:test|spec)\.[cm]?[jt]sx?|.+\.test-d\.ts"
    r"|.+(?:Test|Tests|IT|Spec)\.(?:java|kt|scala|cs|swift|groovy)|.+_spec\.rb|.+_test\.rb|test_.+\.rb"
    r"|.+_test\.exs|.+Test\.php|.+_test\.(?:c|cc|cpp|rs|dart)|test_.+\.(?:c|cc|cpp))$"
)
#: Source code: in a ``doc/`` folder it is still code (Go's ``doc`` packages, cobra's man-page writer).
_SOURCE_SUFFIXES = frozenset(
    [
        ".py",
        ".pyi",
        ".go",
        ".ts",
        ".tsx",
        ".mts",
        ".cts",
        ".js",
        ".jsx",
        ".mjs",
        ".cjs",
        ".rs",
        ".java",
        ".kt",
        ".scala",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".rb",
        ".php",
        ".swift",
        ".m",
        ".ex",
        ".exs",
        ".erl",
        ".hs",
        ".ml",
        ".lua",
        ".pl",
        ".sh",
        ".dart",
        ".zig",
        ".jl",
        ".r",
    ]
)
#: Snapshot and recorded-response files are fixtures wherever they are.
_FIXTURE_FILE = re.compile(r"^.+\.(?:snap|golden)$")


def file_role(path: str) -> Role:
    """The role of the file at ``path`` (relative to the repository root, ``/``-separated)."""
    parts = [part for part in path.replace("\\", "/").split("/") if part]
    if not parts:
        return "code"
    name = parts[-1]
    folders = {part.lower() for part in parts[:-1]}
    lowered = name.lower()
    suffix = lowered[lowered.rfind(".") :] if "." in lowered else ""
    if suffix in _DOC_SUFFIXES or (not suffix and name.upper() in _DOC_NAMES):
        return "docs"
    if folders & _FIXTURE_DIRS or _FIXTURE_FILE.match(lowered):
        return "fixture"
    if folders & _TEST_DIRS or _TEST_FILE.match(name):
        return "test"
    if folders & _EXAMPLE_DIRS or lowered.startswith("example_") or lowered.startswith("example."):
        return "example"
    if folders & _DOC_DIRS and suffix not in _SOURCE_SUFFIXES:
        return "docs"
    return "code"


#: Words that show a question asks for tests or documentation: the default scope then includes them.
_ASKS = {
    "tests": re.compile(r"\b(?:tests?|testing|tested|specs?|unit[- ]?tests?|fixtures?|mocks?)\b", re.IGNORECASE),
    "docs": re.compile(
        r"\b(?:docs?|documentation|documented|readme|examples?|tutorial|guide|changelog)\b", re.IGNORECASE
    ),
}


def roles_for(scope: Scope, query: str) -> tuple[Role, ...]:
    """The roles a search with ``scope`` returns for ``query``.

    ``code`` (the default) widens to tests or docs when the question names them ("which tests
    cover retries", "docs for the timeout option"): asking for them is the one case where they
    should not be ranked below the implementation.
    """
    roles: list[Role] = list(SCOPE_ROLES[scope])
    if scope == "code":
        for asked, pattern in _ASKS.items():
            if pattern.search(query):
                roles.extend(SCOPE_ROLES[asked])  # type: ignore[index]
    return tuple(dict.fromkeys(roles))
