"""``models.settings.Settings``: CODEBASE_MCP_* environment variables and their validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from models.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_without_environment() -> None:
    settings = Settings()
    assert settings.batch_size == 100
    assert settings.embedder == "local"
    assert settings.allowed_roots == []


def test_prefixed_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEBASE_MCP_BATCH_SIZE", "7")
    monkeypatch.setenv("CODEBASE_MCP_EMBEDDER", "ollama")
    monkeypatch.setenv("CODEBASE_MCP_OLLAMA_URL", "http://gpu-box:11434")
    monkeypatch.setenv("CODEBASE_MCP_OLLAMA_DIMENSION", "768")
    monkeypatch.setenv("CODEBASE_MCP_EMBED_RETRY_BASE_SECONDS", "0.25")
    monkeypatch.setenv("CODEBASE_MCP_LOG_JSON", "true")
    monkeypatch.setenv("CODEBASE_MCP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CODEBASE_MCP_DATABASE_URL", "postgresql://u:p@db/codebase")
    settings = Settings()
    assert settings.batch_size == 7
    assert settings.embedder == "ollama"
    assert settings.ollama_url == "http://gpu-box:11434"
    assert settings.ollama_dimension == 768
    assert settings.embed_retry_base_seconds == 0.25
    assert settings.log_json is True
    assert settings.data_dir == tmp_path
    assert settings.database_url == "postgresql://u:p@db/codebase"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "3")
    monkeypatch.setenv("EMBEDDER", "ollama")
    settings = Settings()
    assert settings.batch_size == 100
    assert settings.embedder == "local"


def test_constructor_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBASE_MCP_BATCH_SIZE", "7")
    assert Settings(batch_size=11).batch_size == 11


def test_overlap_must_be_smaller_than_the_window() -> None:
    assert Settings(chunk_lines=40, chunk_overlap_lines=39).chunk_overlap_lines == 39
    with pytest.raises(pydantic.ValidationError, match="CHUNK_OVERLAP_LINES"):
        Settings(chunk_lines=40, chunk_overlap_lines=40)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/srv/a,/srv/b", [Path("/srv/a"), Path("/srv/b")]),
        ("/srv/only", [Path("/srv/only")]),
        ("/srv/a,,/srv/b,", [Path("/srv/a"), Path("/srv/b")]),
        ("", []),
        (" , ", []),
    ],
)
def test_allowed_roots_is_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[Path]
) -> None:
    monkeypatch.setenv("CODEBASE_MCP_ALLOWED_ROOTS", raw)
    assert Settings().allowed_roots == expected


def test_allowed_roots_expand_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODEBASE_MCP_ALLOWED_ROOTS", "~/code,/opt/src")
    assert Settings().allowed_roots == [tmp_path / "code", Path("/opt/src")]


def test_allowed_roots_tolerate_spaces_after_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBASE_MCP_ALLOWED_ROOTS", "/srv/a, /srv/b , ~/x")
    roots = Settings().allowed_roots
    assert roots[:2] == [Path("/srv/a"), Path("/srv/b")]
    assert all(root.is_absolute() for root in roots)


def test_allowed_roots_as_a_list_argument() -> None:
    roots: list[Any] = [Path("/a"), "/b"]  # a str item is coerced like the environment's
    assert Settings(allowed_roots=roots).allowed_roots == [Path("/a"), Path("/b")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATCH_SIZE", "0"),
        ("BATCH_SIZE", "1001"),
        ("BATCH_SIZE", "many"),
        ("BATCH_MAX_BYTES", "1023"),
        ("EMBEDDER", "openai"),
        ("EMBED_BATCH_SIZE", "0"),
        ("EMBED_MAX_ATTEMPTS", "0"),
        ("EMBED_TIMEOUT_SECONDS", "0"),
        ("EMBED_RETRY_BASE_SECONDS", "-1"),
        ("OLLAMA_DIMENSION", "0"),
        ("CHUNK_LINES", "4"),
        ("CHUNK_OVERLAP_LINES", "-1"),
        ("CHUNK_MAX_CHARS", "199"),
        ("MAX_FILE_BYTES", "0"),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("BATCHES_IN_FLIGHT", "0"),
        ("STALE_BATCH_SECONDS", "0"),
        ("JOB_RETENTION_DAYS", "0"),
        ("LOG_JSON", "sometimes"),
        ("HTTP_PORT", "eighty"),
    ],
)
def test_invalid_environment_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"CODEBASE_MCP_{name}", value)
    with pytest.raises(pydantic.ValidationError) as error:
        Settings()
    assert name.lower() in str(error.value)


def test_invalid_constructor_values_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(batch_size=0)
    with pytest.raises(pydantic.ValidationError):
        Settings(chunk_max_chars=10)


def test_every_setting_has_a_row_in_the_readme_table() -> None:
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `CODEBASE_MCP_")
    }
    missing = sorted(
        f"CODEBASE_MCP_{name.upper()}" for name in Settings.model_fields if f"CODEBASE_MCP_{name.upper()}" not in rows
    )
    assert not missing, f"settings without a row in README.md's table: {missing}"
