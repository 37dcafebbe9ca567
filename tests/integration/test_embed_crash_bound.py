"""The embed stage's crash bound: a call's vectors are in the embedding cache before the next call is sent.

``embed_texts`` commits each embedder call's vectors to ``embedding_cache`` right after the call
returns (the chunks get them in the background while the next call runs), so a worker killed
mid-batch loses at most the call in the embedder's hands: the redelivered batch fills every
earlier one from the cache. Observed where it matters, at the embedding server: when a request
arrives, every text of the request before it must already be committed (seen by another
connection). The deterministic embedding server runs in the test's own event loop, so its
per-request hook looks at the database while the worker waits for the answer. Real server, one
worker process, RabbitMQ, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from models.embedding_cache import text_hash
from tests.conftest import EMBEDDING_DIMENSION
from tests.fixtures.fake_embedding_server import start_fake_embedding_server
from tests.integration.conftest import StartStack
from tests.integration.stack import finish

#: Texts per embedder call: the batch's few dozen chunks take several calls.
EMBED_BATCH_SIZE = 3
FILES = 3
FUNCTIONS_PER_FILE = 5


def make_repo(token: str) -> Path:
    """A few files of small functions, every text unique to this run (none can be cached already)."""
    repo = Path(tempfile.mkdtemp(prefix="cbm-crash-bound-")) / "repo"
    repo.mkdir()
    for number in range(FILES):
        functions = [
            f"def {token}_step_{number}_{index}(value: int) -> int:\n"
            f'    """Stage {index} of file {number} ({token})."""\n'
            f"    total = value * {index + 2} + {number}\n"
            f"    return total - {index}\n"
            for index in range(FUNCTIONS_PER_FILE)
        ]
        (repo / f"module_{number}.py").write_text("\n\n".join(functions))
    return repo


@dataclass
class ArrivalCheck:
    """The embedding server's hook: at each request, is the previous request's every text committed?"""

    db: asyncpg.Pool
    embedder: str
    armed: bool = False
    previous: list[str] | None = None
    requests: int = 0
    #: Requests at whose arrival the previous request's texts were all in the cache.
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    async def cached(self, texts: list[str]) -> int:
        hashes = list({text_hash(body) for body in texts})
        count = await self.db.fetchval(
            "SELECT count(*)::int FROM embedding_cache WHERE embedder = $1 AND text_hash = ANY($2::bytea[])",
            self.embedder,
            hashes,
        )
        return int(count)

    async def __call__(self, texts: list[str]) -> None:
        if not self.armed:
            return  # the server's readiness probes while the stack starts
        self.requests += 1
        try:
            if await self.cached(texts):
                # Cached texts are not sent: the check below would prove nothing for them.
                self.violations.append(f"request {self.requests}: some of its own texts were cached before it")
            if self.previous is not None:
                missing = len(set(self.previous)) - await self.cached(self.previous)
                if missing:
                    self.violations.append(
                        f"request {self.requests} arrived while {missing} of request {self.requests - 1}'s "
                        f"{len(set(self.previous))} texts were not in embedding_cache"
                    )
                else:
                    self.checked += 1
        except Exception as error:  # recorded, not raised: a 500 would be retried by the client
            self.violations.append(f"request {self.requests}: check failed: {error!r}")
        self.previous = list(texts)


async def test_each_call_is_cached_before_the_next_is_sent(start_stack: StartStack, db: asyncpg.Pool) -> None:
    token = "crashbound" + uuid.uuid4().hex[:10]
    repo = make_repo(token)
    model = "fake-crash-bound"
    check = ArrivalCheck(db, f"ollama:{model}")
    runner, url = await start_fake_embedding_server(dimension=EMBEDDING_DIMENSION, on_request=check)
    try:
        # In a thread: the server's readiness probe needs this loop (the embedding server) running.
        stack = await asyncio.to_thread(
            start_stack,
            env={
                "CODEBASE_MCP_OLLAMA_URL": url,
                "CODEBASE_MCP_OLLAMA_MODEL": model,
                "CODEBASE_MCP_EMBED_BATCH_SIZE": str(EMBED_BATCH_SIZE),
                # One batch, embedded by one worker process one call at a time: "the previous
                # request" is the same batch's previous call.
                "CODEBASE_MCP_BATCH_SIZE": "100",
                "CODEBASE_MCP_EMBED_CONCURRENCY": "1",
            },
            worker_processes=1,
        )
        check.armed = True
        async with stack.client() as client:
            started = await client.call("start_indexing_background", repo_path=str(repo), name="crashbound")
            final = await finish(client, started["job_id"], timeout=120)
    finally:
        check.armed = False
        await runner.cleanup()

    assert final["status"] == "completed", final
    job = uuid.UUID(started["job_id"])
    batches = await db.fetchval("SELECT count(*)::int FROM index_batches WHERE job_id = $1", job)
    assert batches == 1, batches
    assert final["chunks_embedded"] == final["chunks_created"] >= 4 * EMBED_BATCH_SIZE, final
    assert check.violations == [], check.violations
    # Several calls in the batch, each one after the first checked at its arrival.
    assert check.requests >= 4, check.requests
    assert check.checked == check.requests - 1, (check.checked, check.requests)
