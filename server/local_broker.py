"""Starting this machine's RabbitMQ when the server finds it stopped (after a reboot, say).

An assistant starts ``codebase-mcp serve`` and expects it to work: the embedded PostgreSQL is
started by the server itself, and so is a *local* RabbitMQ that ``codebase-mcp setup`` installed
once but that is not running now. Only a broker this machine can start is touched: the URL's
host is loopback, its port is one the local node listens on, and ``rabbitmq-server`` is installed.
Installing or configuring it stays the job of ``codebase-mcp setup`` (it needs root and minutes);
a remote broker is never started from here.

One start runs at a time: every caller that finds the port closed waits on the same attempt, for
at most ``BROKER_START_WAIT_SECONDS``, while the attempt itself goes on in the background. A start
that failed is not retried for ``RETRY_AFTER_SECONDS``, so a broken install does not fork a new
Erlang VM on every tool call; its reason goes into the tool's error.

``rabbitmq-server -detached`` reads the ``RABBITMQ_*`` environment variables (node name, ports, data
folders) this process was started with, so a node configured that way is the one that starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from models.settings import Settings

logger = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: After a failed start, tool calls report that failure (not a new attempt) for this long.
RETRY_AFTER_SECONDS = 30.0
#: How often a start in progress probes the port.
PROBE_INTERVAL_SECONDS = 0.5
#: Longest a start waits for the port before it counts as failed.
START_DEADLINE_SECONDS = 120.0
#: Longest a start waits when the launcher itself exited with an error.
REFUSED_GRACE_SECONDS = 5.0
#: Longest the launcher itself may run (it returns once the VM is detached).
LAUNCH_TIMEOUT_SECONDS = 60.0
LAUNCHER = "rabbitmq-server"

DEFAULT_CONFIG_FILE = Path("/etc/rabbitmq/rabbitmq.conf")
AMQP_PORT = 5672

#: Why the port does not answer, or None when it does (``IndexingService.broker_problem``).
Probe = Callable[[], Awaitable[str | None]]


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def node_ports(environ: Mapping[str, str]) -> set[int]:
    """The AMQP ports the node ``rabbitmq-server`` would start listens on, as RabbitMQ decides them:
    ``RABBITMQ_NODE_PORT``, else the ``listeners.tcp.*`` lines of its configuration file, else 5672."""
    if environ.get("RABBITMQ_NODE_PORT", "").isdigit():
        return {int(environ["RABBITMQ_NODE_PORT"])}
    config = Path(environ.get("RABBITMQ_CONFIG_FILE") or DEFAULT_CONFIG_FILE)
    try:
        lines = config.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {AMQP_PORT}
    ports = set()
    for line in lines:
        key, equals, value = line.partition("=")
        if equals and key.strip().startswith("listeners.tcp."):
            port = value.strip().rpartition(":")[2]  # "5672", "127.0.0.1:5672", "::1:5672"
            if port.isdigit():
                ports.add(int(port))
    return ports or {AMQP_PORT}


def startable_here(broker_url: str, environ: Mapping[str, str]) -> bool:
    """Whether starting this machine's node would bring up the broker ``broker_url`` names: its host
    is loopback and its port is one that node listens on (another port is someone else's broker)."""
    parts = urlsplit(broker_url)
    if (parts.hostname or "127.0.0.1") not in LOCAL_HOSTS:
        return False
    return (parts.port or AMQP_PORT) in node_ports(environ)


class LocalBroker:
    """Starts the loopback RabbitMQ the settings name when its port is closed; one attempt at a time."""

    def __init__(self, settings: Settings, probe: Probe) -> None:
        self.settings = settings
        self._probe = probe
        self._attempt: asyncio.Task[str | None] | None = None
        self._failed_at = -float("inf")
        self._failure: str | None = None
        self.starts = 0

    def launcher(self) -> str | None:
        """The ``rabbitmq-server`` this server would run, or None when it may not start one."""
        if not self.settings.start_local_broker or not startable_here(self.settings.broker_url, os.environ):
            return None
        return shutil.which(LAUNCHER)

    async def recover(self, problem: str) -> str | None:
        """Given why the port is closed, start the broker (or join the start under way) and wait for it.

        Returns None once the port answers; otherwise the reason for the caller's error: the start
        failed, it is still under way after the wait, or this server may not start a broker.
        """
        launcher = self.launcher()
        if launcher is None:
            return problem
        if self._attempt is None or self._attempt.done():
            if self._failure is not None and time.monotonic() - self._failed_at < RETRY_AFTER_SECONDS:
                return f"{problem}; starting it failed {time.monotonic() - self._failed_at:.0f}s ago: {self._failure}"
            self._attempt = asyncio.create_task(self._start(launcher, problem), name="start-local-rabbitmq")
        wait = self.settings.broker_start_wait_seconds
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._attempt), timeout=wait)
        except TimeoutError:
            return f"{problem}; this server is starting it (not ready after {wait:.0f}s): retry in a few seconds"
        if failure is None:
            return None
        return f"{problem}; starting it failed: {failure}"

    async def _start(self, launcher: str, problem: str) -> str | None:
        """Run the launcher once and wait for the port; the failure's reason, or None when it answers.

        Servers of one data dir (one per editor window) that find the broker down together launch it
        once: the holder of ``DATA_DIR/rabbitmq-start.lock`` (an ``flock``) runs the launcher, the
        others only wait for the port.
        """
        # Another server (or the operator) may have started it since the caller's probe.
        if await self._probe() is None:
            return None
        began = time.monotonic()
        log_path = self.settings.data_dir / "logs" / "rabbitmq-start.log"
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with (self.settings.data_dir / "rabbitmq-start.lock").open("a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    launching = True
                except BlockingIOError:
                    launching = False  # another server is launching it: wait for the same port
                code = 0
                if launching:
                    logger.warning("%s: starting it with `%s -detached` (output: %s)", problem, launcher, log_path)
                    self.starts += 1
                    code = await self._launch(launcher, log_path)
                # A launcher that refused (not root, node name taken) gets a short grace, not the full wait.
                deadline = START_DEADLINE_SECONDS if code == 0 else REFUSED_GRACE_SECONDS
                while time.monotonic() - began < deadline:
                    if await self._probe() is None:
                        logger.warning("local RabbitMQ is up after %.1fs", time.monotonic() - began)
                        self._failure = None
                        return None
                    await asyncio.sleep(PROBE_INTERVAL_SECONDS)
        except (OSError, TimeoutError) as error:
            return self._failed(f"could not run {launcher}: {type(error).__name__}: {error}")
        said = _last_line(log_path)
        return self._failed(
            f"`{launcher} -detached` exited {code}{f' ({said})' if said else ''} and nothing answered within "
            f"{deadline:.0f}s; see /var/log/rabbitmq/ or run `codebase-mcp setup`"
        )

    @staticmethod
    async def _launch(launcher: str, log_path: Path) -> int:
        """``rabbitmq-server -detached``, its output appended to ``log_path``; its exit code.

        Output goes to a file, not a pipe: the detached Erlang VM may inherit the launcher's
        descriptors, and a pipe would then never reach end-of-file.
        """
        with log_path.open("ab") as output:
            launched = await asyncio.create_subprocess_exec(
                launcher,
                "-detached",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # the broker outlives this server; signals sent to us are not its
            )
            return await asyncio.wait_for(launched.wait(), timeout=LAUNCH_TIMEOUT_SECONDS)

    def _failed(self, reason: str) -> str:
        logger.error("could not start the local RabbitMQ: %s", reason)
        self._failure = reason
        self._failed_at = time.monotonic()
        return reason

    async def aclose(self) -> None:
        """Stop waiting on a start (the broker itself, once launched, keeps running)."""
        if self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._attempt
