"""Hosts on one machine: Linux network namespaces joined by a bridge, made and removed by the test.

Each host is a namespace with one interface (``eth0``, a veth pair whose other end sits on a bridge
in a namespace of its own, the "switch") and one address in a private /24. Nothing is added to the
machine's own namespace: no address, no route, no interface. A process runs "on" a host through
``ip netns exec``; the test process itself joins the client host (``entered``), so that every socket
it opens afterwards goes over the switch like a user's would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

_CLONE_NEWNET = 0x40000000


def ensure_tools() -> None:
    """``ip`` (iproute2) and ``nft`` (nftables, for the delayed path) from Debian when missing."""
    wanted = {"ip": "iproute2", "nft": "nftables", "unshare": "util-linux"}
    missing = [package for tool, package in wanted.items() if shutil.which(tool) is None]
    if not missing:
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True, check=False, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True, timeout=600)
        subprocess.run(install, env=env, capture_output=True, check=True, timeout=600)


def run(*args: str, timeout: float = 30) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass
class Network:
    """Namespaces ``cbm<tag>-<host>`` on the subnet ``<prefix>.0/24``; host N has ``<prefix>.N``."""

    tag: str
    hosts: dict[str, int]
    prefix: str = "10.231.7"
    created: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"cbm{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.prefix}.{self.hosts[host]}"

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> None:
        switch = self.ns("switch")
        run("ip", "netns", "add", switch)
        self.created.append(switch)
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        for host in self.hosts:
            ns = self.ns(host)
            run("ip", "netns", "add", ns)
            self.created.append(ns)
            port = f"p-{host}"[:15]
            run("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def remove(self) -> None:
        # Deleting a namespace deletes its interfaces; the veth ends on the switch go with them.
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=30)
        self.created.clear()

    def set_link(self, host: str, up: bool) -> None:
        """The host's cable in or out: its one interface up or down (``ip link set eth0 down``)."""
        run("ip", "-n", self.ns(host), "link", "set", "eth0", "up" if up else "down")

    def nft(self, host: str, *script: str) -> None:
        run(*self.exec_prefix(host), "nft", *script)

    @contextlib.contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """Run the calling thread inside the host's namespace (sockets it opens belong there)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)
