"""``actors.embedders.ollama.OllamaEmbedder`` against the in-process fake Ollama server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from actors.embedders import EmbedderRejectedError, EmbedderUnavailableError
from actors.embedders.ollama import OllamaEmbedder, probe_dimension
from tests.fixtures.fake_embedding_server import FakeEmbedder, control, start_fake_embedding_server

DIMENSION = 16
MODEL = "nomic-embed-text"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner, url = await start_fake_embedding_server(dimension=DIMENSION)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def flaky_server() -> AsyncIterator[str]:
    runner, url = await start_fake_embedding_server(dimension=DIMENSION, fail_first=2)
    try:
        yield url
    finally:
        await runner.cleanup()


async def _get(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        reply.raise_for_status()
        return await reply.json()


async def _embed(url: str, texts: list[str], **options: Any) -> np.ndarray:
    options.setdefault("dimension", DIMENSION)
    options.setdefault("retry_base_seconds", 0.01)
    embedder = OllamaEmbedder(url=url, model=options.pop("model", MODEL), **options)
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


async def test_batches_are_split_by_batch_size(server: str) -> None:
    texts = [f"def function_{i}(): return {i}" for i in range(10)]
    vectors = await _embed(server, texts, batch_size=4)
    stats = await _get(f"{server}/stats")
    assert stats["requests"] == 3  # 4 + 4 + 2
    assert stats["texts"] == 10
    assert vectors.shape == (10, DIMENSION)
    assert vectors.dtype == np.float32


async def test_vectors_come_back_in_input_order_and_unit_length(server: str) -> None:
    texts = ["parse_invoice_header", "class HttpServer", "zzz", "", "parse_invoice_header"]
    vectors = await _embed(server, texts, batch_size=2)
    reference = FakeEmbedder(DIMENSION)
    expected = np.stack([reference.embed(text) for text in texts])
    assert np.allclose(vectors, expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


async def test_one_request_when_texts_fit_one_batch(server: str) -> None:
    await _embed(server, ["a", "b", "c"], batch_size=64)
    assert (await _get(f"{server}/stats"))["requests"] == 1


async def test_no_texts_means_no_request(server: str) -> None:
    vectors = await _embed(server, [], batch_size=4)
    assert vectors.shape == (0, DIMENSION)
    assert (await _get(f"{server}/stats"))["requests"] == 0


async def test_transient_failures_are_retried(flaky_server: str) -> None:
    vectors = await _embed(flaky_server, ["x = 1", "y = 2"], max_attempts=3)
    assert vectors.shape == (2, DIMENSION)
    stats = await _get(f"{flaky_server}/stats")
    assert stats["failed"] == 2
    assert stats["requests"] == 1


async def test_too_few_attempts_for_the_transient_failures_raise(flaky_server: str) -> None:
    with pytest.raises(EmbedderUnavailableError):
        await _embed(flaky_server, ["x = 1"], max_attempts=2)
    assert (await _get(f"{flaky_server}/stats"))["failed"] == 2


async def test_permanent_failure_names_the_service_and_model(server: str) -> None:
    await asyncio.to_thread(control, server, {"fail": True})
    with pytest.raises(EmbedderUnavailableError) as raised:
        await _embed(server, ["x = 1"], max_attempts=4)
    assert not isinstance(raised.value, EmbedderRejectedError)  # a 503 is an outage: the job waits for it
    message = str(raised.value)
    assert f"{server}/api/embed" in message
    assert MODEL in message
    assert "4 attempts" in message
    assert "503" in message
    stats = await _get(f"{server}/stats")
    assert stats["failed"] == 4  # exactly max_attempts calls, no more
    assert stats["requests"] == 0


async def test_retry_backoff_doubles_from_the_base(server: str) -> None:
    await asyncio.to_thread(control, server, {"fail": True})
    started = time.perf_counter()
    with pytest.raises(EmbedderUnavailableError):
        await _embed(server, ["x"], max_attempts=4, retry_base_seconds=0.05)
    # Sleeps of 0.05 + 0.1 + 0.2 between the four attempts.
    assert time.perf_counter() - started >= 0.35


async def test_unreachable_service_raises_after_retries() -> None:
    runner, url = await start_fake_embedding_server(dimension=DIMENSION)
    await runner.cleanup()  # nothing listens on that port any more
    with pytest.raises(EmbedderUnavailableError) as raised:
        await _embed(url, ["x"], max_attempts=2)
    assert url in str(raised.value)
    assert MODEL in str(raised.value)


async def test_wrong_dimension_is_a_clear_error_and_not_retried(server: str) -> None:
    # Rejected, not merely unavailable: the job fails at once instead of waiting for a service that is up.
    with pytest.raises(EmbedderRejectedError) as raised:
        await _embed(server, ["a", "b", "c"], dimension=DIMENSION * 2, max_attempts=5)
    message = str(raised.value)
    assert f"(3, {DIMENSION})" in message
    assert f"(3, {DIMENSION * 2})" in message
    assert MODEL in message
    assert (await _get(f"{server}/stats"))["requests"] == 1


async def test_client_errors_are_not_retried(server: str) -> None:
    # The fake server answers HTTP 400 to an empty model name; a long backoff would show any retry.
    started = time.perf_counter()
    with pytest.raises(EmbedderRejectedError) as raised:
        await asyncio.wait_for(_embed(server, ["x"], model="", max_attempts=5, retry_base_seconds=5), timeout=4)
    assert time.perf_counter() - started < 4
    assert "HTTP 400" in str(raised.value)


async def test_error_after_a_client_error_reports_the_attempts_really_made(server: str) -> None:
    with pytest.raises(EmbedderUnavailableError) as raised:
        await _embed(server, ["x"], model="", max_attempts=5, retry_base_seconds=5)
    assert "5 attempts" not in str(raised.value)


async def test_session_is_reusable_after_aclose(server: str) -> None:
    embedder = OllamaEmbedder(url=server + "/", model=MODEL, dimension=DIMENSION, retry_base_seconds=0.01)
    try:
        first = await embedder.embed(["same text"])
        await embedder.aclose()
        second = await embedder.embed(["same text"])
    finally:
        await embedder.aclose()
    assert np.array_equal(first, second)
    assert embedder.name == f"ollama:{MODEL}"


async def test_probe_dimension_reads_the_vector_size(server: str) -> None:
    assert await probe_dimension(server, MODEL) == DIMENSION


async def test_probe_dimension_of_a_failing_service_raises(server: str) -> None:
    await asyncio.to_thread(control, server, {"fail": True})
    with pytest.raises(EmbedderUnavailableError) as raised:
        await probe_dimension(server, MODEL)
    assert server in str(raised.value)
