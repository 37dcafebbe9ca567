"""The one probe of an embedding service (``actors.embedders.ollama.embed_probe``: the dimension at
start, ``/readyz``) against the real fake embedding server.

It uses urllib instead of the Ollama client so that a readiness poll right after a restart does not
import aiohttp (issue 16); these cases keep its answers what the Ollama client's were.
"""

from __future__ import annotations

import pytest

from actors.embedders.base import EmbedderUnavailableError
from actors.embedders.ollama import embed_probe
from tests.fixtures.fake_embedding_server import control
from tests.integration.stack import free_port


def problem(url: str, model: str, timeout: float) -> str:
    with pytest.raises(EmbedderUnavailableError) as raised:
        embed_probe(url, model, timeout)
    return str(raised.value)


def test_a_serving_embedder_answers_with_a_vector(fake_embedding_url: str) -> None:
    assert len(embed_probe(fake_embedding_url, "fake-deterministic", 5.0)) > 0


def test_a_failing_embedder_says_its_http_status(fake_embedding_url: str) -> None:
    control(fake_embedding_url, {"fail": True})
    try:
        said = problem(fake_embedding_url, "fake-deterministic", 5.0)
    finally:
        control(fake_embedding_url, {"fail": False})
    assert said == f"embedding service {fake_embedding_url} (model fake-deterministic) answered HTTP 503"


def test_an_embedder_nobody_listens_on_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    said = problem(url, "m", 2.0)
    assert said.startswith(f"embedding service {url} (model m) is unreachable: ")
    assert "refused" in said.lower()


def test_a_wrong_url_says_its_http_status(fake_embedding_url: str) -> None:
    url = fake_embedding_url.rstrip("/") + "/not-ollama"
    assert problem(url, "m", 5.0) == f"embedding service {url} (model m) answered HTTP 404"


def test_credentials_in_the_url_are_sent_as_basic_auth_not_taken_for_the_host(fake_embedding_url: str) -> None:
    # As the Ollama client (aiohttp) reads them; urllib alone would fail on "user:secret@host".
    with_credentials = fake_embedding_url.replace("http://", "http://embed:s%40cret@", 1)
    assert len(embed_probe(with_credentials, "fake-deterministic", 5.0)) > 0


def test_a_malformed_url_is_reported_not_raised_as_something_else() -> None:
    assert "is unreachable" in problem("http://user:pw@127.0.0.1:notaport", "m", 2.0)
