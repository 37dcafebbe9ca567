"""The optional bearer token in front of the HTTP transport (``CODEBASE_MCP_AUTH_TOKEN``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from models.settings import Settings
from server.app import build_http_app
from server.auth import BearerTokenMiddleware, bearer_token

TOKEN = "t0ken-with-enough-entropy"


async def request(app: Any, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, without a server or the app's lifespan."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8765),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def app() -> Any:
    return build_http_app(Settings(auth_token=SecretStr(TOKEN)))


@pytest.mark.parametrize("path", ["/mcp", "/metrics", "/anything-else"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer "},
    ],
)
async def test_protected_paths_need_the_token(app: Any, path: str, headers: dict[str, str]) -> None:
    status, response_headers, body = await request(app, path, headers)
    assert status == 401
    assert response_headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"] == "unauthorized"
    assert "Authorization: Bearer" in json.loads(body)["detail"]
    assert TOKEN not in body.decode()


async def test_right_token_reaches_metrics(app: Any) -> None:
    status, _, body = await request(app, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert b"# HELP" in body
    status, _, _ = await request(app, "/metrics", {"Authorization": f"bearer   {TOKEN}  "})
    assert status == 200


async def test_healthz_stays_open(app: Any) -> None:
    status, _, body = await request(app, "/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


async def test_no_token_configured_means_no_check() -> None:
    status, _, _ = await request(build_http_app(Settings()), "/metrics")
    assert status == 200


def test_blank_token_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBASE_MCP_AUTH_TOKEN", "  ")
    assert Settings().auth_token is None
    monkeypatch.setenv("CODEBASE_MCP_AUTH_TOKEN", TOKEN)
    settings = Settings()
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)


def test_empty_token_is_refused_by_the_middleware() -> None:
    with pytest.raises(ValueError):
        BearerTokenMiddleware(lambda *a: None, "")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer abc", b"abc"),
        (b"BEARER  abc ", b"abc"),
        (b"Basic abc", None),
        (b"Bearer", None),
        (b"", None),
    ],
)
def test_bearer_token_parsing(value: bytes, expected: bytes | None) -> None:
    assert bearer_token([(b"authorization", value)]) == expected
