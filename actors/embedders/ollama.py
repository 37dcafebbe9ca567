"""The Ollama-compatible HTTP embedder: ``POST {url}/api/embed`` with ``{"model", "input": [...]}``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors.embedders.base import Embedder, EmbedderRejectedError, EmbedderUnavailableError, normalise

if TYPE_CHECKING:
    import aiohttp

    from actors.embedders.base import Vectors

logger = logging.getLogger(__name__)

#: Answers worth another attempt: overload, restarts, gateway hiccups.
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _client_error() -> type[Exception]:
    import aiohttp

    return aiohttp.ClientError


class OllamaEmbedder(Embedder):
    """Batched, retried client. Creates its ``ClientSession`` lazily on the calling loop."""

    def __init__(
        self,
        *,
        url: str,
        model: str,
        dimension: int,
        batch_size: int = 64,
        max_attempts: int = 5,
        retry_base_seconds: float = 0.5,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.name = f"ollama:{model}"
        self.dimension = dimension
        self._endpoint = url.rstrip("/") + "/api/embed"
        self._model = model
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp (~0.2 CPU-s of imports) on first use: a server whose queries never reach Ollama,
        # and every process before its first call, starts without it.
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_seconds))
        return self._session

    async def _post(self, texts: list[str]) -> Vectors:
        # numpy here, not at import: the server imports this module for its probe at start.
        import numpy as np

        last_error = "no attempt made"
        attempts = 0
        client_error = _client_error()
        for attempt in range(1, self._max_attempts + 1):
            attempts = attempt
            try:
                async with self._client().post(self._endpoint, json={"model": self._model, "input": texts}) as reply:
                    if reply.status == 200:
                        body = await reply.json()
                        vectors = np.asarray(body["embeddings"], dtype=np.float32)
                        if vectors.shape != (len(texts), self.dimension):
                            raise EmbedderRejectedError(
                                f"embedding service {self._endpoint} (model {self._model}) returned vectors of shape "
                                f"{vectors.shape}, expected ({len(texts)}, {self.dimension})"
                            )
                        return normalise(vectors)
                    detail = (await reply.text())[:200]
                    last_error = f"HTTP {reply.status}: {detail}"
                    if reply.status not in _RETRYABLE_STATUSES:
                        raise EmbedderRejectedError(
                            f"embedding service {self._endpoint} (model {self._model}) refused the request: "
                            f"{last_error}"
                        )
            except (client_error, TimeoutError) as error:
                last_error = f"{type(error).__name__}: {error}"
            if attempt < self._max_attempts:
                delay = self._retry_base * 2 ** (attempt - 1)
                logger.warning(
                    "embedding call failed (attempt %d/%d, retry in %.1fs): %s",
                    attempt,
                    self._max_attempts,
                    delay,
                    last_error,
                )
                await asyncio.sleep(delay)
        raise EmbedderUnavailableError(
            f"embedding service {self._endpoint} (model {self._model}) failed after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}: {last_error}"
        )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            await self._post(list(texts[start : start + self._batch_size]))
            for start in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(parts)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def embed_probe(url: str, model: str, timeout_seconds: float) -> list[float]:
    """One embedding of one word at the Ollama-compatible ``url``, blocking; raises EmbedderUnavailableError.

    The one probe of a service (its dimension at start, ``/readyz``), in urllib rather than the
    client's aiohttp: a readiness poll right after a restart then imports nothing heavy (~0.2
    CPU-s beside the workers' first batch, issue 16). Credentials in the URL are sent as Basic
    auth and no proxy is taken from the environment, as the aiohttp client does.
    """
    import base64
    import http.client
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import unquote, urlsplit

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        # ``http://user:secret@host``: urllib alone would take the credentials for part of the host.
        parts = urlsplit(url.rstrip("/") + "/api/embed")
        headers = {"Content-Type": "application/json"}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            parts = parts._replace(netloc=netloc + (f":{parts.port}" if parts.port is not None else ""))
        request = urllib.request.Request(
            parts.geturl(),
            data=json.dumps({"model": model, "input": ["dimension probe"]}).encode(),
            headers=headers,
        )
        with opener.open(request, timeout=timeout_seconds) as reply:
            vectors = json.loads(reply.read())["embeddings"]
        vector = list(vectors[0]) if vectors else []
    except urllib.error.HTTPError as error:
        raise EmbedderUnavailableError(f"embedding service {url} (model {model}) answered HTTP {error.code}") from None
    # Refused, timed out, a broken HTTP answer, not JSON, no vectors of the expected shape; a bad
    # port in the URL.
    except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError) as error:
        raise EmbedderUnavailableError(f"embedding service {url} (model {model}) is unreachable: {error}") from None
    if not vector:
        raise EmbedderUnavailableError(f"embedding service {url} (model {model}) returned no vector")
    return vector


async def probe_dimension(url: str, model: str, timeout_seconds: float = 30.0) -> int:
    """Ask the service for one vector to learn the model's dimension (:func:`embed_probe` in a thread)."""
    return len(await asyncio.to_thread(embed_probe, url, model, timeout_seconds))
