"""Bounds on the MCP SDK's streamable-HTTP sessions, so abandoned ones cannot lock clients out.

The SDK (2.3) keeps a session until its client deletes it or it has been idle for
``session_idle_timeout`` (30 min by default), and refuses new sessions with 503 once
``max_sessions`` (10,000) are open. A local process that opens sessions and never deletes them
reaches the cap in about two minutes and locks every legitimate client out for half an hour.

Here the idle timeout and the cap come from the settings, and at the cap the least recently used
*idle* session (no request in flight, no open stream) is evicted to admit the newcomer, so a flood
can only push out idle sessions: their clients get 404 on their next request, which tells an MCP
client to initialize again. Only when every open session is busy is a newcomer refused.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

logger = logging.getLogger(__name__)


def _idle_since(transport: Any) -> float | None:
    """The transport's idle deadline (earlier means idle for longer), or None when it is busy or unknown.

    Reads the SDK transport's private state (``idle_scope``, ``_requests_in_flight``); when an
    SDK version lacks it, nothing is evicted and the SDK's own cap (503) applies.
    """
    scope = getattr(transport, "idle_scope", None)
    in_flight = getattr(transport, "_requests_in_flight", None)
    if scope is None or in_flight is None or in_flight or scope.cancel_called:
        return None
    deadline = float(scope.deadline)
    return None if math.isinf(deadline) else deadline


def evict_least_recently_used(manager: StreamableHTTPSessionManager) -> str | None:
    """Forget the idle session that has been idle longest and end it; returns its id, or None."""
    instances: dict[str, Any] = getattr(manager, "_server_instances", {})
    candidates = [
        (deadline, sid) for sid, transport in instances.items() if (deadline := _idle_since(transport)) is not None
    ]
    if not candidates:
        return None
    _, victim = min(candidates)
    transport = instances.pop(victim)
    getattr(manager, "_session_owners", {}).pop(victim, None)
    # Ends the session's server task, whose own cleanup then terminates the transport.
    transport.idle_scope.cancel()
    return victim


def bound_sessions(manager: StreamableHTTPSessionManager) -> None:
    """Make ``manager`` evict its least recently used idle session instead of refusing at the cap."""
    admit = getattr(manager, "_admit_session", None)
    if admit is None or manager.max_sessions is None:
        logger.warning("MCP SDK without the expected session manager: idle sessions are not evicted at the cap")
        return
    cap = manager.max_sessions

    def admit_with_eviction(requestor: Any) -> Any:
        if len(getattr(manager, "_server_instances", {})) >= cap:
            victim = evict_least_recently_used(manager)
            if victim is not None:
                logger.info("%d HTTP sessions open: evicted the least recently used idle one", cap)
        return admit(requestor)

    manager._admit_session = admit_with_eviction  # type: ignore[method-assign]
