"""Fixtures every integration module shares: a factory of real stacks and an MCP client.

Each module gets its own stacks (server + workers on a RabbitMQ vhost of their own, so no other
module's workers take their messages); a module that needs another environment passes it to
``start_stack``. Helpers (``follow_job``, ``finish``, ``TERMINAL``) live in ``stack.py`` and the
embedding server's ``/control`` client in ``tests/fixtures/fake_embedding_server.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import McpClient, Stack

StartStack = Callable[..., Stack]


@pytest.fixture(scope="module")
def start_stack(base_env: dict[str, str], make_vhost: Callable[[], str]) -> Iterator[StartStack]:
    """``start_stack(env=..., stack_class=Stack, workers=True, **stack_options)``: a started stack; all stop
    at module end.

    ``env`` is added to the session's environment; a vhost of its own is used unless ``env`` names
    a broker. ``workers=False`` starts the server alone (the test attaches workers of its own).
    """
    started: list[Stack] = []

    def start(
        *, env: dict[str, str] | None = None, stack_class: type[Stack] = Stack, workers: bool = True, **options: Any
    ) -> Stack:
        merged = {**base_env, "CODEBASE_MCP_BROKER_URL": make_vhost(), **(env or {})}
        stack = stack_class(env=merged, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-logs-")), **options)
        started.append(stack)
        if workers:
            stack.start_workers()
        stack.start_server()
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture(scope="module")
def stack(start_stack: StartStack) -> Stack:
    """The module's stack with the session's settings (modules with other settings override this)."""
    return start_stack()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[McpClient]:
    """An MCP session for one test (see :meth:`Stack.owned_client`)."""
    async with stack.owned_client() as session:
        yield session
