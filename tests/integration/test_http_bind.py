"""``serve --host`` on an address other than the default: clients reaching it there are served.

Found by the multi-host stack (``tests/hosts``): with only ``--host`` given, the MCP app was built
for ``CODEBASE_MCP_HTTP_HOST`` (127.0.0.1), so the SDK's DNS-rebinding check allowed only
``Host: 127.0.0.1``/``localhost`` and refused every client that used the address the server listened on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack


@pytest.fixture(scope="module")
def second_loopback_stack(base_env: dict[str, str]) -> Iterator[Stack]:
    # 127.0.0.2 is loopback to the kernel but not one of the SDK's "localhost" names: it stands for
    # any address a server on another host is given.
    running = Stack(env=base_env, log_dir=Path(tempfile.mkdtemp(prefix="cbm-test-bind-")), host="127.0.0.2")
    running.start_server()
    yield running
    running.stop()


async def test_server_bound_by_cli_host_answers_clients_on_that_address(second_loopback_stack: Stack) -> None:
    assert "CODEBASE_MCP_HTTP_HOST" not in second_loopback_stack.env
    async with second_loopback_stack.client() as client:
        answer = await client.call("list_repositories")
    assert isinstance(answer["repositories"], list)
