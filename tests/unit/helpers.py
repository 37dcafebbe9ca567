"""Helpers shared by the unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def run_with_timeout(function: Callable[[], T], seconds: float) -> T:
    """Run ``function`` in a daemon thread; fail the test (instead of hanging the suite) if it overruns."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = function()
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"call did not finish within {seconds} s (hang?)")
    if "error" in result:
        raise result["error"]
    return result["value"]
