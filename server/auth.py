"""Optional bearer-token check in front of the HTTP transport (``CODEBASE_MCP_AUTH_TOKEN``).

A plain ASGI middleware, so it guards every route the app has or will have (``/mcp``,
``/metrics``, anything mounted later) except the probes listed in :data:`OPEN_PATHS`, which
report only status words and counts.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Liveness and readiness probes stay open: orchestrators call them without credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

UNAUTHORIZED_BODY = json.dumps(
    {
        "error": "unauthorized",
        "detail": "this server requires 'Authorization: Bearer <token>' (the value of CODEBASE_MCP_AUTH_TOKEN)",
    }
).encode()


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first ``Authorization: Bearer …`` header, or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


class BearerTokenMiddleware:
    """Answers 401 to any HTTP request but the open probes that lacks the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("an empty auth token would let everybody in")
        self.app = app
        self._token = token.encode("utf-8")

    def allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        given = bearer_token(headers)
        # compare_digest takes the same time wherever the first difference is.
        return given is not None and hmac.compare_digest(given, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.allowed(list(scope.get("headers") or [])):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
                    (b"www-authenticate", b'Bearer realm="codebase-mcp"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
