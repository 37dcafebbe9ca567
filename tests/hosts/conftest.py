"""The multi-host stack (``-m hosts``): data, api, chunk and embed hosts in network namespaces.

Every host's settings and command come from ``docs/deployment.md`` ("Several hosts"), read at the
start of the run, so the page is what the run checked. RabbitMQ is a private node on the data host
(never the shared 127.0.0.1:5672 node), PostgreSQL the embedded one, listening on the data host's
address; the embed host runs the deterministic Ollama-compatible server and its worker in a mount
namespace where the repositories' folder is an empty tmpfs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest

from models.embedded_postgres import stop_embedded_postgres
from tests.faults.conftest import Db
from tests.fixtures.rabbitmq_node import RabbitNode, make_private_node
from tests.hosts.network import Network, ensure_tools
from tests.integration.stack import BIN, REPO_ROOT, McpClient, Stack
from tests.integration.test_security import client_with

DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
HOSTS = {"data": 1, "api": 2, "chunk": 3, "embed": 4, "client": 9}
PG_PORT = 54329
OLLAMA_PORT = 11434
#: Per text, so that a job lasts long enough for faults to land mid-job.
EMBED_DELAY_MS_PER_TEXT = 15.0
#: What the test adds to the page's settings (the page lists these too).
TEST_EXTRAS = {
    "CODEBASE_MCP_BATCH_SIZE": "5",
    "CODEBASE_MCP_BATCHES_IN_FLIGHT": "4",
    "CODEBASE_MCP_EMBED_RETRY_BASE_SECONDS": "0.2",
    "PYTHONPATH": str(REPO_ROOT),
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class HostSetup:
    """One host's part of the page: its environment and the commands it runs."""

    env: dict[str, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    #: ``# host: <name> rabbitmq.conf`` blocks: configuration lines.
    conf: list[str] = field(default_factory=list)


def read_deployment_doc(values: dict[str, str], text: str | None = None) -> dict[str, HostSetup]:
    """The ``# host: NAME`` blocks of docs/deployment.md with the placeholders filled in.

    ``host: all`` is merged under every other host. An unknown placeholder raises ``KeyError``, so
    the page and the test cannot drift apart silently.
    """
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8") if text is None else text
    section = text.split("## Several hosts", 1)[1].split("\n## ", 1)[0]
    setups: dict[str, HostSetup] = {}
    for host, kind, body in re.findall(r"```\w*\n# host: (\w+)( rabbitmq\.conf)?\n(.*?)```", section, re.S):
        setup = setups.setdefault(host, HostSetup())
        for line in body.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if kind:
                setup.conf.append(Template(line).substitute(values))
                continue
            words = [Template(word).substitute(values) for word in shlex.split(line)]
            if words[0] == "export":
                for assignment in words[1:]:
                    name, _, value = assignment.partition("=")
                    setup.env[name] = value
            else:
                setup.commands.append(words)
    common = setups.pop("all", HostSetup())
    for setup in setups.values():
        setup.env = {**common.env, **setup.env}
    return setups


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text(encoding="utf-8")
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def sigkill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {pids} outlived SIGKILL")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        # A zombie has been killed; its parent (not us) has yet to reap it.
        return " Z " not in Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1][:4]
    return False


@dataclass
class HostsStack(Stack):
    """The four hosts' processes, each started as the page says and killable on its own."""

    network: Network = field(default_factory=lambda: Network("", {}))
    setups: dict[str, HostSetup] = field(default_factory=dict)
    rabbit: RabbitNode | None = None
    data_dir: Path = Path()
    repos: Path = Path()
    token: str = ""
    groups: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    embedder: subprocess.Popen[bytes] | None = None

    @property
    def embedding_url(self) -> str:
        return f"http://{self.network.address('embed')}:{OLLAMA_PORT}"

    def host_env(self, host: str) -> dict[str, str]:
        return {
            **self.setups[host].env,
            **TEST_EXTRAS,
            "dramatiq_prom_db": str(self.log_dir / f"prom-{host}"),
        }

    def _command(self, host: str, program: str) -> list[str]:
        (command,) = [words for words in self.setups[host].commands if words[0] == program]
        return [str(BIN / program), *command[1:]]

    # --- data: RabbitMQ and PostgreSQL ---

    def start_data(self) -> None:
        assert self.rabbit is not None
        self.rabbit.start()
        migrate = subprocess.run(
            [*self.network.exec_prefix("data"), *self._command("data", "codebase-mcp")],
            env={**self.env, **self.host_env("data")},
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr.decode(errors="replace")[-3000:]

    def data_pids(self) -> list[int]:
        assert self.rabbit is not None
        pids: list[int] = []
        postmaster = self.data_dir / "postgres" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pids += descendants(int(postmaster.read_text(encoding="utf-8").split()[0]))
        beam = self.rabbit.pid()
        if beam is not None:
            pids += descendants(beam)
        return pids

    def kill_data(self) -> None:
        pids = self.data_pids()
        assert len(pids) >= 2, pids
        sigkill_all(pids)

    # --- embed: the embedding service and its worker ---

    def start_embedder(self) -> None:
        self.embedder = self._spawn(
            "ollama-fake",
            [
                *self.network.exec_prefix("embed"),
                sys.executable,
                "-m",
                "tests.fixtures.fake_embedding_server",
                "--host",
                self.network.address("embed"),
                "--port",
                str(OLLAMA_PORT),
                "--dimension",
                self.setups["embed"].env["CODEBASE_MCP_OLLAMA_DIMENSION"],
                "--model",
                self.setups["embed"].env["CODEBASE_MCP_OLLAMA_MODEL"],
                "--delay-ms-per-text",
                str(EMBED_DELAY_MS_PER_TEXT),
            ],
        )

    def start_group(self, host: str) -> None:
        launcher = self.network.exec_prefix(host)
        if host == "embed":
            # A mount namespace of its own where the repositories' folder is an empty, unreadable tmpfs.
            hide = 'mount -t tmpfs -o size=64k,mode=000 cbm-no-repositories "$0" && exec "$@"'
            launcher += ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, str(self.repos)]
        self.groups[host] = self._spawn(
            f"workers-{host}", [*launcher, *self._command(host, "dramatiq")], self.host_env(host)
        )

    def kill_group(self, host: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self._kill(self.groups.get(host), sig)

    # --- api: the MCP server ---

    def start_server(self) -> None:
        self.server = self._spawn(
            "server",
            [*self.network.exec_prefix("api"), *self._command("api", "codebase-mcp")],
            self.host_env("api"),
        )
        self.wait_healthy(timeout=120)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[McpClient]:
        async with client_with(self, {"Authorization": f"Bearer {self.token}"}) as session:
            yield session

    def stop(self) -> None:
        for host in list(self.groups):
            self.kill_group(host)
        self.kill_server(signal.SIGKILL)
        self._kill(self.embedder, signal.SIGKILL)
        if self.rabbit is not None:
            self.rabbit._ctl("stop")
        stop_embedded_postgres(self.data_dir)


@pytest.fixture(scope="session")
def hosts_stack() -> Iterator[HostsStack]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed")
    ensure_tools()
    network = Network(f"{os.getpid() % 100000}", HOSTS)
    work = Path(tempfile.mkdtemp(prefix="cbm-hosts-"))
    work.chmod(0o755)  # the embedded PostgreSQL runs as its own user under it
    repos = work / "repositories"
    repos.mkdir()
    values = {
        "DATA_ADDR": network.address("data"),
        "API_ADDR": network.address("api"),
        "EMBED_ADDR": network.address("embed"),
        "MQ_PASSWORD": secrets.token_urlsafe(12),
        "AUTH_TOKEN": secrets.token_urlsafe(16),
        "DATA_DIR": str(work / "data"),
    }
    setups = read_deployment_doc(values)
    assert set(setups) == {"data", "api", "chunk", "embed"}, sorted(setups)
    data_env = setups["data"].env
    rabbit = make_private_node(
        "cbmhosts",
        5672,
        25672,
        host=network.address("data"),
        user="codebase",
        password=values["MQ_PASSWORD"],
        netns=network.ns("data"),
        conf=setups["data"].conf,
    )
    log_dir = work / "logs"
    log_dir.mkdir()
    for host in setups:
        (log_dir / f"prom-{host}").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEBASE_MCP_", "dramatiq_"))}
    stack = HostsStack(
        env=env,
        log_dir=log_dir,
        host=network.address("api"),
        port=8765,
        network=network,
        setups=setups,
        rabbit=rabbit,
        data_dir=Path(data_env["CODEBASE_MCP_DATA_DIR"]),
        repos=repos,
        token=values["AUTH_TOKEN"],
    )
    try:
        network.create()
        with network.entered("client"):
            stack.start_data()
            stack.start_embedder()
            stack.start_group("embed")
            stack.start_group("chunk")
            stack.start_server()
            print(f"\nhosts stack: {work} (logs in {log_dir})")
            yield stack
    finally:
        stack.stop()
        network.remove()
        shutil.rmtree(rabbit.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
async def hosts_db(hosts_stack: HostsStack) -> AsyncIterator[Db]:
    url = hosts_stack.setups["api"].env["CODEBASE_MCP_DATABASE_URL"]
    checker = Db(url)
    yield checker
    await checker.close()
