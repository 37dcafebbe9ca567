"""``/readyz``'s embedding probe (``server.service._embedder_answers``) against the real fake embedding server.

It uses urllib instead of the Ollama client so that a readiness poll right after a restart does not
import aiohttp (issue 16); these cases keep its answers what the Ollama client's were.
"""

from __future__ import annotations

from server.service import _embedder_answers
from tests.fixtures.fake_embedding_server import control
from tests.integration.stack import free_port


def test_a_serving_embedder_is_ready(fake_embedding_url: str) -> None:
    assert _embedder_answers(fake_embedding_url, "fake-deterministic", 5.0) is None


def test_a_failing_embedder_says_its_http_status(fake_embedding_url: str) -> None:
    control(fake_embedding_url, {"fail": True})
    try:
        problem = _embedder_answers(fake_embedding_url, "fake-deterministic", 5.0)
    finally:
        control(fake_embedding_url, {"fail": False})
    assert problem == f"embedding service {fake_embedding_url} (model fake-deterministic) answered HTTP 503"


def test_an_embedder_nobody_listens_on_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    problem = _embedder_answers(url, "m", 2.0)
    assert problem is not None and problem.startswith(f"embedding service {url} (model m) is unreachable: ")
    assert "refused" in problem.lower()


def test_a_wrong_url_says_its_http_status(fake_embedding_url: str) -> None:
    url = fake_embedding_url.rstrip("/") + "/not-ollama"
    assert _embedder_answers(url, "m", 5.0) == f"embedding service {url} (model m) answered HTTP 404"


def test_credentials_in_the_url_are_sent_as_basic_auth_not_taken_for_the_host(fake_embedding_url: str) -> None:
    # As the Ollama client (aiohttp) reads them; urllib alone would fail on "user:secret@host".
    with_credentials = fake_embedding_url.replace("http://", "http://embed:s%40cret@", 1)
    assert _embedder_answers(with_credentials, "fake-deterministic", 5.0) is None


def test_a_malformed_url_is_reported_not_raised() -> None:
    problem = _embedder_answers("http://user:pw@127.0.0.1:notaport", "m", 2.0)
    assert problem is not None and "is unreachable" in problem
