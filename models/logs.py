"""The one logging setup shared by server, workers and CLI: one line per event, on stderr and, when
asked, in a rotating log file (MCP clients swallow a stdio server's stderr).

Pipeline code binds ``job_id`` and ``batch`` through :func:`log_context`, so every line a batch
produces carries them without each call repeating them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "codebase_mcp_log_context", default=None
)


#: ``scheme://user:password@`` in any URL (database, broker, embedder). The password runs to the last
#: ``@`` before the host, so an unencoded ``@`` inside it is masked too.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"']*):(?P<secret>[^\s/\"']*)@")
#: ``password=…`` / ``"password": "…"`` in libpq-style DSNs and dict reprs.
_KEY_PASSWORD = re.compile(
    r"(?P<head>(?<!://)\b(?:password|passwd|pwd|secret)[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"',;&})]+)", re.IGNORECASE
)
MASK = "***"
#: Variables whose URL passwords (or whole value) are masked verbatim wherever they appear.
SECRET_VARIABLES = (
    "CODEBASE_MCP_DATABASE_URL",
    "CODEBASE_MCP_BROKER_URL",
    "CODEBASE_MCP_OLLAMA_URL",
    "CODEBASE_MCP_AUTH_TOKEN",
)
#: Well-known default passwords are not secrets; masking them verbatim would garble ordinary words.
_NOT_SECRET = frozenset({"guest", "postgres", "codebase", "password"})
_known_secrets: set[str] = set()


def remember_secret(value: str) -> None:
    """Mask ``value`` (and its percent-decoded form) verbatim in everything :func:`redact` sees."""
    for form in {value, unquote(value)}:
        if len(form) >= 4 and form.lower() not in _NOT_SECRET:
            _known_secrets.add(form)


def remember_secrets_from_environment() -> None:
    """Remember the passwords in the connection URLs and the auth token this process was given."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        if name.endswith("_TOKEN"):
            remember_secret(value)
            continue
        try:
            password = urlsplit(value).password
        except ValueError:
            continue
        if password:
            remember_secret(password)


def redact(text: str) -> str:
    """``text`` with every URL password, ``password=`` value and remembered secret replaced by ``***``.

    Used on every log line, on tool error texts and on job error messages, so that database,
    broker and embedder credentials never leave the process in clear.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _KEY_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Exceeded|Closed|Failed)\b")
#: Lines SQLAlchemy appends to a DBAPI error: the statement, its parameters (which may hold whole
#: source texts) and a link to its docs. None says what went wrong.
_SQLALCHEMY_NOISE = ("[SQL:", "[parameters:", "(Background on this error at:")
MAX_CAUSE_CHARS = 500


def failure_cause(trace: str) -> str:
    """The exception line (and its detail lines) of a formatted traceback, for a job's error message.

    The last line of a traceback is not always the cause: SQLAlchemy ends its errors with
    ``(Background on this error at: https://sqlalche.me/...)`` after the SQL and its parameters.
    """
    lines = trace.strip().splitlines()
    start = None
    for index in range(len(lines) - 1, -1, -1):
        if _EXCEPTION_LINE.match(lines[index]):
            start = index
            break
    if start is None:
        kept = [line for line in lines if line.strip() and not line.startswith(_SQLALCHEMY_NOISE)]
        return kept[-1][:MAX_CAUSE_CHARS] if kept else "unknown error"
    cause: list[str] = []
    for line in lines[start:]:
        if line.startswith(_SQLALCHEMY_NOISE):
            break
        if line.strip():
            cause.append(line.strip())
    text = " ".join(cause)
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 1] + "…"


#: Longest log message kept whole (tracebacks are not counted); the middle of a longer one is cut,
#: with its length said.
MAX_LOG_MESSAGE_CHARS = 1000
#: Of a cut message, the characters kept from its end: a traceback logged as a message (uvicorn's
#: startup failure) names its exception on its last line.
_KEPT_TAIL_CHARS = 300


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message, arguments, exception and stack text before any handler
    formats it. Installed on the root handler by :func:`configure_logging`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as its raw template
            message = str(record.msg)
        if len(message) > MAX_LOG_MESSAGE_CHARS:
            # Dramatiq logs whole messages ("Failed to post_process_message(embed_batch(..., {'files':
            # [...chunk texts...]}))" after a broker reconnect): logs must not become a copy of the code.
            head = MAX_LOG_MESSAGE_CHARS - _KEPT_TAIL_CHARS
            cut = len(message) - MAX_LOG_MESSAGE_CHARS
            message = f"{message[:head]}…({cut:,} characters not logged)…{message[-_KEPT_TAIL_CHARS:]}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every log line emitted inside the block (thread- and task-local)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = _context.get() or {}
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context: dict[str, Any] = getattr(record, "context", {})
        if context:
            line += " " + " ".join(f"{key}={value}" for key, value in context.items())
        return redact(line)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_text or record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        # Context values are the caller's; mask them too (the message was masked by the filter).
        return redact(json.dumps(entry, default=str))


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler | None:
    """A rotating handler on ``path`` (its folder created), or None with the reason on stderr."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as error:
        # Logging must never stop the server: stderr still works, and this line says why the file does not.
        print(
            f"codebase-mcp: cannot write the log file {path} ({error.strerror or error}); logging to stderr only. "
            "Set CODEBASE_MCP_LOG_FILE to a writable path.",
            file=sys.stderr,
        )
        return None


def configure_logging(
    level: str = "INFO",
    *,
    json_lines: bool = False,
    log_file: Path | None = None,
    log_file_max_bytes: int = 10_000_000,
    log_file_backups: int = 5,
) -> Path | None:
    """Install the handlers on the root logger; idempotent, so every entry point may call it.

    Parameters:
        level: root level (``DEBUG`` also un-silences the chatty libraries).
        json_lines: one JSON object per line instead of text (stderr and file alike).
        log_file: also append every line here, rotated at ``log_file_max_bytes`` keeping
            ``log_file_backups`` old files; the same credential masking as stderr.

    Returns:
        The log file being written, or None (not asked for, or not writable: stderr says why).
        Called again without ``log_file``, the file of the earlier call is kept.
    """
    remember_secrets_from_environment()
    root = logging.getLogger()
    previous_file: logging.handlers.RotatingFileHandler | None = None
    # Replace whatever was there (Dramatiq's CLI installs its own) so each event is one line.
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, logging.handlers.RotatingFileHandler) and getattr(old, "_codebase_mcp", False):
            previous_file = old
    # A later call without a file (an import that sets logging up again) keeps the file chosen earlier:
    # the server's log must not stop because a module it imports configured logging too.
    file_handler: logging.Handler | None = None
    if previous_file is not None and (log_file is None or Path(previous_file.baseFilename) == log_file.absolute()):
        file_handler, log_file = previous_file, Path(previous_file.baseFilename)
        file_handler.filters.clear()
    else:
        if previous_file is not None:
            previous_file.close()
        if log_file is not None:
            file_handler = _file_handler(log_file, log_file_max_bytes, log_file_backups)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file_handler is not None:
        handlers.append(file_handler)
    for handler in handlers:
        handler._codebase_mcp = True  # type: ignore[attr-defined]
        handler.addFilter(_ContextFilter())
        handler.addFilter(RedactingFilter())
        if json_lines:
            handler.setFormatter(_JsonFormatter())
        elif handler is file_handler:
            # Server and CLI processes append to one file: the pid tells their lines apart.
            handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        else:
            handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty libraries stay at WARNING unless asked for DEBUG.
    if level.upper() != "DEBUG":
        for name in ("pika", "httpx2", "httpcore2", "uvicorn.access", "transformers", "mcp", "alembic.runtime.plugins"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return log_file if file_handler is not None else None
