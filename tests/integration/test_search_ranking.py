"""Ranking on the real stack: file roles and ``scope``, collapsed spans, identifiers, non-ASCII words.

One repository holds an implementation, its tests, a fixture, docs and an example that all talk
about the same thing, so that only the file role tells them apart. It is indexed through the MCP
server, RabbitMQ and the Dramatiq workers into this module's own PostgreSQL; embeddings come from
the suite's deterministic embedding server, so the ranking assertions use text mode or hold for
any vector order.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from server.search import Filters, Hit, Ranking, line_kinds, run_search
from tests.integration.stack import McpClient, Stack, ToolCallError, private_cluster
from tests.integration.test_search import finish, write

RETRY_PY = '''\
"""Retry scheduling for outgoing requests."""

import os


def retry_delay(attempt, base=0.5):
    """Seconds to wait before the next retry: doubles after every failed attempt."""
    return base * (2 ** attempt)


def trust_store():
    """Where certificates come from: REQUESTS_CA_BUNDLE wins over the system store."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or "/etc/ssl/certs"
'''

# Talks about requests, CA and bundles a lot, but never names the variable.
BUNDLE_PY = '''\
def describe_bundle(requests, ca):
    """Requests that carry a CA bundle; each request names its bundle and its CA."""
    bundle = {"requests": requests, "ca": ca}
    return f"bundle of {len(requests)} requests for ca {ca}: {bundle}"
'''

TEST_RETRY_PY = '''\
from retry import retry_delay


def test_retry_delay_doubles():
    """The retry delay doubles after every failed attempt."""
    assert retry_delay(1) == 2 * retry_delay(0)
'''

DOCS_MD = """\
# Retries

The retry delay doubles after every failed attempt, starting at half a second.
"""

EXAMPLE_PY = """\
from retry import retry_delay

# Print the retry delay of the first attempts: it doubles after every failed attempt.
for attempt in range(3):
    print(retry_delay(attempt))
"""

FIXTURE_JSON = '{"retry": {"delay": 0.5, "doubles": true, "attempt": 3}}\n'

# Long enough to be cut into overlapping windows; "handshake" is in every window.
LONG_GO = (
    "package net\n\n// Negotiate runs the handshake.\nfunc Negotiate(steps []string) int {\n\tcount := 0\n"
    + "".join(f"\tcount += len(steps) // handshake step {index}\n" for index in range(70))
    + "\treturn count\n}\n"
)

NON_ASCII_PY = '''\
def повторить_запрос(попытка):
    """Повторить запрос после паузы: пауза удваивается."""
    return попытка * 2


def 再試行():
    """再試行 の 待ち時間 を 計算する"""
    return 1
'''

# A getter under a long doc comment that names the option again and again, and the function that
# actually checks it: the question asks where it is checked (server.search.demote_short).
OPTIONS_TS = """\
export class PoolOptions {
	/**
	How many sockets the pool may keep open per host; `maxSockets` above this limit are queued.
	The pool closes idle sockets after the keep-alive timeout, so `maxSockets` bounds open sockets.
	Set `maxSockets` to Infinity to open a socket for every request to the host.

	@default 10
	*/
	get maxSockets() {
		return this.internals.maxSockets;
	}
}
"""

POOL_TS = """\
export function acquireSocket(pool, host, options) {
	const open = pool.open.get(host) ?? [];
	if (open.length >= options.maxSockets) {
		pool.queue.push(host);
		return undefined;
	}
	const socket = pool.connect(host);
	open.push(socket);
	pool.open.set(host, open);
	return socket;
}
"""


# A function whose docstring is longer than one chunk: its middle window is prose only, but starts
# inside the docstring, so on its own it reads as code (server.search.definition_texts).
AIRSHIP_PY = (
    "def launch_airship(hangar):\n"
    '    """Launch the airship from its hangar.\n\n'
    + "".join(f"    :param p{index}: the mooring mast, tether and winch setting {index}.\n" for index in range(45))
    + '    """\n    return hangar.release()\n\n\n'
    "def secure_airship(airship, mast):\n"
    "    line = mast.tether(airship)\n"
    "    drum = mast.winch\n"
    "    drum.reel(line, slack=0)\n"
    "    while not airship.held():\n"
    "        drum.reel(line, slack=1)\n"
    "    airship.lock(line)\n"
    "    airship.secured = True\n"
    "    return line\n"
)

# A module header of imports that names the same things, and a short constant.
HANGAR_PY = (
    "from airship.mooring import (\n"
    + "".join(f"    mast_{index},\n    tether_{index},\n    winch_{index},\n" for index in range(4))
    + ")\n"
    "from airship.mooring.mast import mast, tether, winch\n\n"
    "HANGARS = 3\n"
)


@pytest.fixture(scope="module")
def ranking_database() -> Iterator[str]:
    with private_cluster("cbm-test-ranking-pg-") as url:
        yield url


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], ranking_database: str, make_vhost: Callable[[], str]) -> Iterator[Stack]:
    env = {**base_env, "CODEBASE_MCP_DATABASE_URL": ranking_database, "CODEBASE_MCP_BROKER_URL": make_vhost()}
    running = Stack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-ranking-logs-")))
    running.start_workers()
    running.start_server()
    yield running
    running.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[McpClient]:
    async with stack.owned_client() as session:
        yield session


@pytest.fixture(scope="module")
async def repo(stack: Stack) -> Path:
    root = Path(tempfile.mkdtemp(prefix="cbm-test-ranking-repo-")) / "gamma"
    write(
        root,
        {
            "src/retry.py": RETRY_PY,
            "src/bundle.py": BUNDLE_PY,
            "tests/test_retry.py": TEST_RETRY_PY,
            "tests/fixtures/retry.json": FIXTURE_JSON,
            "docs/retries.md": DOCS_MD,
            "examples/delays.py": EXAMPLE_PY,
            "net/negotiate.go": LONG_GO,
            "src/intl.py": NON_ASCII_PY,
            "web/options.ts": OPTIONS_TS,
            "web/pool.ts": POOL_TS,
            "src/airship.py": AIRSHIP_PY,
            "src/hangar.py": HANGAR_PY,
        },
    )
    async with stack.client() as session:
        started = await session.call("start_indexing_background", repo_path=str(root), name="gamma")
        final = await finish(session, started["job_id"])
        assert final["status"] == "completed" and final["files_indexed"] == 12, final
    return root


QUESTION = "the retry delay doubles after every failed attempt"


async def search(client: McpClient, query: str, **arguments: Any) -> list[dict[str, Any]]:
    answer = await client.call("search_code", query=query, repository="gamma", **arguments)
    results: list[dict[str, Any]] = answer["results"]
    return results


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_default_scope_returns_implementation_first(client: McpClient, repo: Path, mode: str) -> None:
    hits = await search(client, QUESTION, mode=mode, limit=20)
    roles = [hit["role"] for hit in hits]
    code = [hit for hit in hits if hit["role"] == "code"]
    assert code and hits[: len(code)] == code, roles  # every code hit ranks above every other role
    assert any(hit["file_path"] == "src/retry.py" for hit in code)
    if mode == "text":
        assert hits[0]["file_path"] == "src/retry.py" and hits[0]["symbol"] == "retry_delay"


@pytest.mark.parametrize(("scope", "roles"), [("tests", {"test", "fixture"}), ("docs", {"docs", "example"})])
async def test_scope_keeps_to_its_roles(client: McpClient, repo: Path, scope: str, roles: set[str]) -> None:
    hits = await search(client, QUESTION, scope=scope, mode="text", limit=20)
    assert hits and {hit["role"] for hit in hits} <= roles, hits
    if scope == "tests":
        assert {hit["file_path"] for hit in hits} == {"tests/test_retry.py", "tests/fixtures/retry.json"}
    if scope == "docs":
        assert {hit["file_path"] for hit in hits} == {"docs/retries.md", "examples/delays.py"}


async def test_scope_all_mixes_roles_and_each_hit_names_its_role(client: McpClient, repo: Path) -> None:
    hits = await search(client, QUESTION, scope="all", mode="text", limit=20)
    by_path = {hit["file_path"]: hit["role"] for hit in hits}
    assert by_path["src/retry.py"] == "code"
    assert by_path["tests/test_retry.py"] == "test"
    assert by_path["tests/fixtures/retry.json"] == "fixture"
    assert by_path["docs/retries.md"] == "docs"
    assert by_path["examples/delays.py"] == "example"


async def test_a_query_that_asks_for_tests_gets_them_in_the_default_scope(client: McpClient, repo: Path) -> None:
    hits = await search(client, "tests for " + QUESTION, mode="text", limit=5)
    assert "tests/test_retry.py" in [hit["file_path"] for hit in hits]


async def test_unknown_scope_is_refused(client: McpClient, repo: Path) -> None:
    with pytest.raises(ToolCallError, match=r"scope\s+Input should be 'code', 'tests', 'docs' or 'all'"):
        await client.call("search_code", query="x", scope="everything")


async def test_the_code_that_checks_an_option_beats_its_getter_under_a_long_comment(
    client: McpClient, repo: Path
) -> None:
    # Hybrid, the default: both retrievers rank the getter first here and the prior halves its
    # fused score (text mode alone is not asserted: its ts_rank gap here is more than twofold).
    hits = await search(client, "where is `maxSockets` checked before a socket is opened for a host")
    paths = [hit["file_path"] for hit in hits]
    assert paths[0] == "web/pool.ts" and "web/options.ts" in paths, paths


async def test_overlapping_windows_of_one_function_collapse_into_one_hit(client: McpClient, repo: Path) -> None:
    for mode in ("text", "hybrid"):
        hits = await search(client, "handshake step count", mode=mode, limit=10)
        in_file = [hit for hit in hits if hit["file_path"] == "net/negotiate.go"]
        assert len(in_file) >= 1, hits
        spans = sorted((hit["start_line"], hit["end_line"]) for hit in in_file)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start > end, (mode, spans)  # no two hits of the file share a line
    text_hits = await search(client, "handshake step count", mode="text", limit=10)
    (merged,) = [hit for hit in text_hits if hit["file_path"] == "net/negotiate.go"]
    total = len(LONG_GO.splitlines())
    # Every window matched, so the one hit left covers the whole function, with its exact lines.
    assert (merged["start_line"], merged["end_line"]) == (1, total)
    assert merged["snippet"] == "\n".join(LONG_GO.splitlines())


async def test_a_query_identifier_ranks_the_chunk_holding_it_whole_first(client: McpClient, repo: Path) -> None:
    hits = await search(client, "which CA bundle do requests use: `REQUESTS_CA_BUNDLE`", mode="text", limit=5)
    assert (hits[0]["file_path"], hits[0]["symbol"]) == ("src/retry.py", "trust_store"), hits
    assert "src/bundle.py" in [hit["file_path"] for hit in hits]  # found by the words, ranked below


@pytest.mark.parametrize(("query", "symbol"), [("повторить запрос", "повторить_запрос"), ("再試行", "再試行")])
async def test_non_ascii_query_words_reach_full_text_search(
    client: McpClient, repo: Path, query: str, symbol: str
) -> None:
    hits = await search(client, query, mode="text", limit=3)
    assert hits and hits[0]["file_path"] == "src/intl.py" and hits[0]["symbol"] == symbol, hits


async def text_hits(database: str, query: str, ranking: Ranking) -> list[Hit]:
    """``run_search`` in text mode over the gamma repository, straight on this module's database."""
    engine = create_async_engine(database, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            (gamma,) = (await conn.execute(text("SELECT id FROM repositories WHERE name = 'gamma'"))).scalars()
            filters = Filters(repository_ids=[gamma], roles=("code",))
            return await run_search(conn, query=query, filters=filters, limit=10, mode="text", ranking=ranking)
    finally:
        await engine.dispose()


async def test_windows_and_import_headers_are_judged_as_the_little_code_they_are(
    repo: Path, ranking_database: str
) -> None:
    query = "mooring mast tether winch"
    # Without collapsing, to see each window; the prior as in run 4 (each window on its own, imports as code).
    before = await text_hits(
        ranking_database, query, Ranking(collapse=False, short_whole_definition=False, short_imports=False)
    )
    after = await text_hits(ranking_database, query, Ranking(collapse=False))
    windows = [hit for hit in before if hit.symbol == "launch_airship"]
    assert len(windows) >= 2, [(hit.symbol, hit.start_line, hit.end_line) for hit in before]
    # A window that starts inside the docstring: on its own, its prose lines read as code.
    prose = [hit for hit in windows if not hit.content.lstrip().startswith("def ")]
    assert prose and all(line_kinds(hit.content)[0] >= Ranking().short_lines for hit in prose)
    scores = {(hit.file_path, hit.start_line): hit.score for hit in after}
    for hit in [*prose, *(hit for hit in before if hit.file_path == "src/hangar.py")]:
        # The whole definition (two code lines under 45 of docstring) and the import header (one
        # constant under 15 import lines) are little code under more comment: half their score.
        assert scores[(hit.file_path, hit.start_line)] == pytest.approx(hit.score * Ranking().short_factor)
    worker = ("src/airship.py", "secure_airship")
    ranked = {
        label: [(hit.file_path, hit.symbol, round(hit.score, 4)) for hit in hits]
        for label, hits in (("before", before), ("after", after))
    }
    # Judged window by window with imports as code, the prose and the imports outrank the code; not now.
    assert (before[0].file_path, before[0].symbol) != worker, ranked
    assert (after[0].file_path, after[0].symbol) == worker, ranked
