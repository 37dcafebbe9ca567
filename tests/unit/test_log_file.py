"""The log file (``CODEBASE_MCP_LOG_FILE``): where it is, that it rotates, that it masks like stderr,
and that an unwritable one costs only a warning."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import logs
from models.logs import MASK, configure_logging
from models.settings import Settings
from server import doctor


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = set(logs._known_secrets)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            root.removeHandler(handler)
            handler.close()
    configure_logging("INFO")
    logs._known_secrets.clear()
    logs._known_secrets.update(saved)


def test_default_is_under_the_data_dir_and_the_setting_overrides_it(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).log_path == tmp_path / "logs" / "codebase-mcp.log"
    blank = Settings.model_validate({"data_dir": tmp_path, "log_file": " "})  # CODEBASE_MCP_LOG_FILE= (empty)
    assert blank.log_path == tmp_path / "logs" / "codebase-mcp.log"
    assert Settings(data_dir=tmp_path, log_file=tmp_path / "x.log").log_path == tmp_path / "x.log"


def test_the_file_gets_the_lines_masked_like_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "logs" / "codebase-mcp.log"
    assert configure_logging("INFO", log_file=path) == path
    logging.getLogger("test.logfile").warning("connecting to %s", "postgresql://app:File-Secret-1@db/codebase_mcp")
    logging.getLogger("test.logfile").info("dict %s", {"password": "File-Secret-2"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert "postgresql://app:***@db/codebase_mcp" in text and text.count(MASK) == 2
    assert "File-Secret" not in text
    assert "WARNING" in text and "test.logfile" in text


def test_it_rotates_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "codebase-mcp.log"
    configure_logging("INFO", log_file=path, log_file_max_bytes=2_000, log_file_backups=2)
    logger = logging.getLogger("test.rotation")
    for index in range(200):
        logger.info("line %d %s", index, "x" * 50)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["codebase-mcp.log", "codebase-mcp.log.1", "codebase-mcp.log.2"]
    assert all(p.stat().st_size <= 2_100 for p in tmp_path.iterdir())
    assert "line 199" in path.read_text(encoding="utf-8")


def test_a_later_call_without_a_file_keeps_it(tmp_path: Path) -> None:
    """An import that sets logging up again (the broker module does) must not stop the server's file."""
    path = tmp_path / "codebase-mcp.log"
    configure_logging("INFO", log_file=path)
    assert configure_logging("INFO") == path
    logging.getLogger("test.keep").info("still in the file")
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(files) == 1
    files[0].flush()
    assert "still in the file" in path.read_text(encoding="utf-8")


def test_an_unwritable_file_is_a_warning_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    assert configure_logging("INFO", log_file=blocker / "codebase-mcp.log") is None
    error = capsys.readouterr().err
    assert f"cannot write the log file {blocker / 'codebase-mcp.log'}" in error
    assert "CODEBASE_MCP_LOG_FILE" in error
    logging.getLogger("test.unwritable").warning("stderr still works")
    assert "stderr still works" in capsys.readouterr().err


def test_doctor_says_where_the_log_file_is(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    text = doctor.render(doctor.report(settings, [], log_file=settings.log_path))
    assert f"log file: {tmp_path / 'logs' / 'codebase-mcp.log'}" in text
    unwritable = doctor.render(doctor.report(settings, [], log_file=None))
    assert "is not writable: set CODEBASE_MCP_LOG_FILE" in unwritable
