"""``models.logs.redact`` and the logging filter: credentials never reach a log line in clear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import logs
from models.logs import MASK, RedactingFilter, configure_logging, redact, remember_secret


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    saved = set(logs._known_secrets)
    logs._known_secrets.clear()
    yield
    logs._known_secrets.clear()
    logs._known_secrets.update(saved)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://cbm:hunter2x@127.0.0.1:5672/vh?heartbeat=60", "amqp://cbm:***@127.0.0.1:5672/vh?heartbeat=60"),
        ("postgresql+asyncpg://u:p%40ss@db:5432/x", "postgresql+asyncpg://u:***@db:5432/x"),
        ("postgresql://u:raw@at@db/x", "postgresql://u:***@db/x"),
        ("http://user:tok@ollama:11434/api/embed", "http://user:***@ollama:11434/api/embed"),
        ("host=db user=u password=s3cret dbname=x", "host=db user=u password=*** dbname=x"),
        ("{'password': 'abc123'}", "{'password': '***'}"),
        ('{"password": "abc123"}', '{"password": "***"}'),
        ("connect to amqp://guest:guest@h/%2F failed", "connect to amqp://guest:***@h/%2F failed"),
    ],
)
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8080/mcp?x=a@b",
        "password authentication failed for user cbm",
        "amqp://127.0.0.1:5672/vhost",
        "job 123e4567-e89b-12d3-a456-426614174000 failed: chunk_batch of batch 3 failed 5 times",
        "user@example.com wrote 3 files",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_remembered_secrets_are_masked_wherever_they_appear() -> None:
    remember_secret("Zq%2Fw9-secret")  # percent-encoded in the URL; both forms are masked
    assert redact("pika said: bad password Zq/w9-secret for cbm") == f"pika said: bad password {MASK} for cbm"
    assert redact("url has Zq%2Fw9-secret in it") == f"url has {MASK} in it"


def test_well_known_defaults_are_not_treated_as_secrets() -> None:
    remember_secret("postgres")
    remember_secret("abc")
    assert redact("embedded postgres started; abc") == "embedded postgres started; abc"


def test_secrets_are_read_from_the_connection_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBASE_MCP_BROKER_URL", "amqp://cbm:Br0ker-Pass@127.0.0.1:5672/v")
    monkeypatch.setenv("CODEBASE_MCP_DATABASE_URL", "postgresql+asyncpg://cbm:Db-Pass-9@127.0.0.1:5/db")
    monkeypatch.setenv("CODEBASE_MCP_AUTH_TOKEN", "tok-tok-tok-1")
    logs.remember_secrets_from_environment()
    assert redact("Br0ker-Pass Db-Pass-9 tok-tok-tok-1") == f"{MASK} {MASK} {MASK}"


@given(
    user=st.text(alphabet=st.characters(whitelist_categories=["Ll", "Nd"]), min_size=1, max_size=10),
    password=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/\"' "),
        min_size=1,
        max_size=30,
    ),
    scheme=st.sampled_from(["amqp", "amqps", "postgresql", "postgresql+asyncpg", "http", "https"]),
    prefix=st.text(max_size=20).filter(lambda text: "://" not in text),
)
def test_any_url_password_is_masked(user: str, password: str, scheme: str, prefix: str) -> None:
    line = f"{prefix} {scheme}://{user}:{password}@host.example:1234/path?x=1"
    masked = redact(line)
    assert f"{scheme}://{user}:{MASK}@host.example:1234/path?x=1" in masked
    assert f":{password}@" not in masked


def _capture(json_lines: bool) -> tuple[logging.Logger, io.StringIO]:
    configure_logging("INFO", json_lines=json_lines)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("test.redaction"), stream


@pytest.mark.parametrize("json_lines", [False, True])
def test_log_lines_mask_messages_arguments_and_tracebacks(json_lines: bool) -> None:
    logger, stream = _capture(json_lines)
    try:
        logger.info("connecting to %s", "amqp://cbm:Arg-Secret-1@h/v")
        logger.warning("direct amqp://cbm:Msg-Secret-2@h/v")
        try:
            raise ConnectionError("cannot reach postgresql://cbm:Exc-Secret-3@db/x")
        except ConnectionError:
            logger.exception("failed")
        logger.info("dict %s", {"password": "Dict-Secret-4"})
    finally:
        configure_logging("INFO")
    output = stream.getvalue()
    for secret in ("Arg-Secret-1", "Msg-Secret-2", "Exc-Secret-3", "Dict-Secret-4"):
        assert secret not in output
    assert output.count(MASK) >= 4
    assert "ConnectionError" in output  # the traceback itself is kept
    if json_lines:
        assert all(json.loads(line) for line in output.splitlines() if line.startswith("{"))


def test_filter_survives_a_malformed_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items amqp://u:Sekrit-55@h", ("nan",), None)
    assert RedactingFilter().filter(record)
    assert "Sekrit-55" not in record.getMessage()


def test_a_logged_dramatiq_message_does_not_copy_its_chunk_texts_into_the_log() -> None:
    # What Dramatiq's consumer logs after a broker reconnect: the whole message, source texts included.
    body = "def secret_algorithm():\n    return 42\n" * 2000
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="index.embed",
        actor_name="embed_batch",
        args=("job", 3, "token", {"files": [{"path": "a.py", "chunks": [[1, 2000, None, body, "a.py"]]}]}),
        kwargs={},
        options={},
    )
    record = logging.LogRecord(
        "dramatiq.worker.ConsumerThread",
        logging.ERROR,
        __file__,
        1,
        "Failed to post_process_message(%s)",
        (message,),
        None,
    )
    whole = record.getMessage()
    RedactingFilter().filter(record)
    text = record.getMessage()
    assert text.startswith("Failed to post_process_message(")
    assert len(text) < 1100, len(text)  # before: every character of the message (78,000 here)
    assert "characters not logged)…" in text
    assert text.endswith(whole[-300:])


def test_a_traceback_logged_as_a_message_keeps_its_last_line() -> None:
    # uvicorn logs a failed startup as one message holding the traceback; the cause is its last line.
    frames = "".join(
        f'  File "/srv/app/module_{n}.py", line {n}, in handler_{n}\n    await step_{n}()\n' for n in range(80)
    )
    trace = f"Traceback (most recent call last):\n{frames}OSError: Connect call failed ('127.0.0.1', 36403)"
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, trace, None, None)
    RedactingFilter().filter(record)
    text = record.getMessage()
    assert len(text) < 1100, len(text)
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("OSError: Connect call failed ('127.0.0.1', 36403)")
