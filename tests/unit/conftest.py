"""Shared fixtures for the unit tests."""

from __future__ import annotations

import os
import tempfile

import pytest

# Hypothesis keeps its example database and caches out of the working tree (its default is ./.hypothesis).
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "codebase-mcp-hypothesis"))


@pytest.fixture(autouse=True)
def _clean_codebase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CODEBASE_MCP_* variable from the caller's shell may leak into a Settings() built by a test."""
    for name in list(os.environ):
        if name.upper().startswith("CODEBASE_MCP_"):
            monkeypatch.delenv(name)
