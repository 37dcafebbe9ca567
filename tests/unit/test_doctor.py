"""The doctor's report never shows a password, and renders one fix per failed check."""

from __future__ import annotations

from models.logs import redact as redact_url
from models.settings import Settings
from server.doctor import Check, render, report, settings_summary


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("amqp://codebase:s3cr%40t@rabbitmq:5672/%2F?heartbeat=60") == (
        "amqp://codebase:***@rabbitmq:5672/%2F?heartbeat=60"
    )
    assert redact_url("postgresql://postgres:pw@db/codebase_mcp") == "postgresql://postgres:***@db/codebase_mcp"
    assert redact_url("http://127.0.0.1:11434") == "http://127.0.0.1:11434"


def test_settings_summary_has_every_setting_and_no_password() -> None:
    settings = Settings(database_url="postgresql://app:hunter2@db:5432/x", broker_url="amqp://app:hunter3@mq:5672/%2F")
    summary = settings_summary(settings)
    assert set(summary) == set(Settings.model_fields)
    assert "hunter2" not in str(summary) and "hunter3" not in str(summary)
    assert summary["database_url"] == "postgresql://app:***@db:5432/x"


def test_render_names_the_fix_of_each_failure_and_fails_overall() -> None:
    checks = [
        Check("database", True, "PostgreSQL 18, pgvector 0.8.6, schema at head (0003)"),
        Check("broker", False, "no consumer on index.embed", "start workers: dramatiq actors"),
    ]
    result = report(Settings(), checks)
    text = render(result)
    assert result["ok"] is False
    assert "ok   database" in text and "FAIL broker: no consumer on index.embed" in text
    assert "fix: start workers: dramatiq actors" in text
    assert text.endswith("some checks failed")


def test_settings_error_is_a_failure() -> None:
    result = report(None, [], settings_error="CHUNK_OVERLAP_LINES (40) must be smaller than CHUNK_LINES (40)")
    assert result["ok"] is False and "FAIL settings" in render(result)
