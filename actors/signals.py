"""SIGTERM to a worker's whole process group stops it instead of hanging it.

``kill -- -PGID``, systemd's default ``KillMode=control-group`` and container runtimes signal every
process of the group: a Dramatiq worker process gets SIGTERM directly *and* once more when the
main process forwards it. Dramatiq takes the second as "kill now" and calls ``sys.exit`` in the
main thread, which then waits for ever on the worker's non-daemon threads (a hang, not a kill).
Here a repeat within :data:`DUPLICATE_WINDOW_SECONDS` of the first is taken for that duplicate and
ignored, so the graceful stop goes on; a later one exits at once, as a kill should.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

#: The main process forwards a signal within milliseconds; a person repeating it takes longer.
DUPLICATE_WINDOW_SECONDS = 5.0
#: Dramatiq's exit code for a killed worker (dramatiq.cli.RET_KILLED).
RET_KILLED = 1


def guard_duplicate_sigterm() -> bool:
    """Wrap the process's SIGTERM handler (Dramatiq's); True when installed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    original: Any = signal.getsignal(signal.SIGTERM)
    if not callable(original):
        return False
    first: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
            original(signum, frame)
        elif now - first[0] < DUPLICATE_WINDOW_SECONDS:
            logger.debug("second SIGTERM %.1f s after the first: the group's duplicate, ignored", now - first[0])
        else:
            logger.warning("SIGTERM again while stopping: exiting now (unfinished messages are redelivered)")
            os._exit(RET_KILLED)

    signal.signal(signal.SIGTERM, handler)
    return True
