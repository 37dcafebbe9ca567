"""Which broker ``serve`` may start (server/local_broker.py), and a launcher that fails.

The real start, on a real RabbitMQ node, is tests/integration/test_broker_autostart.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.settings import Settings
from server.local_broker import LocalBroker, node_ports, startable_here

URL = "amqp://guest:guest@127.0.0.1:5673/%2F?heartbeat=10"


def test_only_the_node_that_listens_on_the_urls_port_is_startable(tmp_path: Path) -> None:
    assert startable_here(URL, {"RABBITMQ_NODE_PORT": "5673"})
    assert not startable_here(URL, {"RABBITMQ_NODE_PORT": "5672"})  # someone else's broker, or a typo
    assert not startable_here(URL.replace("127.0.0.1", "10.1.2.3"), {"RABBITMQ_NODE_PORT": "5673"})
    assert startable_here(URL.replace("127.0.0.1", "localhost"), {"RABBITMQ_NODE_PORT": "5673"})
    config = tmp_path / "rabbitmq.conf"
    config.write_text("# ours\nlisteners.tcp.default = 127.0.0.1:5999\nlisteners.tcp.2 = ::1:5673\n", encoding="utf-8")
    assert node_ports({"RABBITMQ_CONFIG_FILE": str(config)}) == {5999, 5673}
    assert startable_here(URL, {"RABBITMQ_CONFIG_FILE": str(config)})
    # No listener line, or no file: RabbitMQ's default port.
    assert node_ports({"RABBITMQ_CONFIG_FILE": str(tmp_path / "missing.conf")}) == {5672}
    config.write_text("loopback_users.guest = true\n", encoding="utf-8")
    assert node_ports({"RABBITMQ_CONFIG_FILE": str(config)}) == {5672}


async def test_a_launcher_that_fails_is_reported_and_not_run_again_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "rabbitmq-server"
    runs = tmp_path / "runs"
    refusal = "echo 'Only root or rabbitmq can run rabbitmq-server' >&2"
    launcher.write_text(f"#!/bin/sh\necho run >> {runs}\n{refusal}\nexit 1\n")
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RABBITMQ_NODE_PORT", "5673")
    monkeypatch.setattr("server.local_broker.REFUSED_GRACE_SECONDS", 0.5)
    settings = Settings(broker_url=URL, data_dir=tmp_path / "data")

    async def closed() -> str:
        return "RabbitMQ at 127.0.0.1:5673 is unreachable (connection refused)"

    broker = LocalBroker(settings, closed)
    first = await broker.recover(await closed())
    assert first is not None
    assert "starting it failed" in first and "exited 1" in first and "Only root or rabbitmq" in first, first
    again = await broker.recover(await closed())
    assert again is not None and "ago" in again, again
    assert runs.read_text().count("run") == 1  # the second call reported the first failure
    # Switched off: the problem as it was, nothing run.
    off = LocalBroker(Settings(broker_url=URL, data_dir=tmp_path / "data", start_local_broker=False), closed)
    assert await off.recover(await closed()) == await closed()
    assert runs.read_text().count("run") == 1
