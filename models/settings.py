"""The one settings object, read from ``CODEBASE_MCP_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    # Root gets a system location so the embedded PostgreSQL (which refuses to run as root and runs
    # as its own user) never needs /root opened up.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/codebase-mcp")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "codebase-mcp"


class Settings(BaseSettings):
    """Every tunable of server, workers and CLI. Documented field by field in the README."""

    model_config = SettingsConfigDict(env_prefix="CODEBASE_MCP_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL (with pgvector). Unset: the embedded PostgreSQL 18 is started."
    )
    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the embedded database lives.")
    embedded_pg_port: int = Field(default=54329, description="TCP port of the embedded PostgreSQL (loopback).")
    # Multi-host deployments (docs/deployment.md "Several hosts"): the data host's embedded database.
    embedded_pg_host: str = Field(
        default="127.0.0.1",
        description="IPv4 address the embedded PostgreSQL listens on; beyond loopback it trusts its own subnets.",
    )
    # heartbeat=10: RabbitMQ drops the connections of a worker that stopped answering (SIGSTOP, a
    # frozen VM, a cut link) after two or three intervals and gives its unacknowledged messages to
    # another worker: about 25 s, against about 150 s with 60 (docs/reliability.md).
    broker_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=10&connection_attempts=5&retry_delay=2"
        "&blocked_connection_timeout=30",
        description="RabbitMQ URL for Dramatiq.",
    )
    # Embedder (int8 area): local-int8 is the bundled model as an int8 ONNX graph, its own name and vectors.
    embedder: Literal["local", "local-int8", "ollama"] = Field(
        default="local",
        description="Embedding backend: local (bundled model, torch), local-int8 (the same model in int8 "
        "through ONNX Runtime, built once under DATA_DIR/models), ollama.",
    )
    embed_batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Texts per embedder call (also the work a crash can lose per embed slot).",
    )
    embed_concurrency: int = Field(
        default=1, ge=1, le=64, description="Batches one worker process embeds at once (the model is the limit)."
    )
    local_runtime: Literal["auto", "fp32", "bf16", "cuda"] = Field(
        default="auto",
        description="Numerics of the local model: auto (GPU, else bf16 where the CPU has it natively, else fp32).",
    )
    local_batch_size: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Texts per length-sorted forward pass of the local model (its fastest on CPU).",
    )
    local_threads: int = Field(
        default=0, ge=0, le=256, description="CPU threads of the local model per worker process; 0: torch's default."
    )
    ollama_url: str = Field(default="http://127.0.0.1:11434", description="Ollama-compatible server.")
    ollama_model: str = Field(default="nomic-embed-text", description="Model name sent to /api/embed.")
    ollama_dimension: int | None = Field(
        default=None, ge=1, le=16000, description="Vector size of the Ollama model; probed once when unset."
    )
    embed_max_attempts: int = Field(default=5, ge=1, description="Attempts per embedder call before the job fails.")
    embed_retry_base_seconds: float = Field(default=0.5, ge=0, description="First backoff; doubles per attempt.")
    embed_timeout_seconds: float = Field(default=120.0, gt=0, description="HTTP timeout of one embedder call.")
    blocked_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A job waiting (blocked) this long for an unreachable embedding service fails, naming it.",
    )
    # --- schema helper: query embedding per repository embedder ---
    query_embed_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Longest wait for a search query's embedding; past it (or when the embedder is down) the "
        "search answers from full text and says so.",
    )
    max_concurrent_jobs: int = Field(default=3, ge=1, description="Jobs running at once; the rest wait as pending.")
    batch_size: int = Field(default=100, ge=1, le=1000, description="Files per ledger batch.")
    batch_max_bytes: int = Field(
        default=262_144, ge=1024, description="Source bytes per batch (bounds messages and a batch's embedding time)."
    )
    batches_in_flight: int = Field(default=6, ge=1, description="Batches of one job dispatched but not recorded.")
    max_file_bytes: int = Field(default=1_000_000, ge=1, description="Larger files are skipped and reported.")
    chunk_lines: int = Field(default=40, ge=5, description="Lines per line-window chunk.")
    chunk_overlap_lines: int = Field(default=5, ge=0, description="Overlap between neighbouring windows.")
    chunk_max_chars: int = Field(default=2000, ge=200, description="Hard cap on one chunk's text.")
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Directories that may be indexed (comma-separated); empty allows any."
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="When set, HTTP requests (except /healthz, /readyz) need 'Authorization: Bearer <token>'.",
    )
    stale_batch_seconds: float = Field(default=900.0, gt=0, description="A dispatched batch idle this long is redone.")
    # hostile2 (issue 16): a job whose batches stopped moving says so before they are re-sent.
    stall_notice_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A running job none of whose batches moved this long gets a 'stalled' event and a progress note.",
    )
    db_idle_in_transaction_seconds: float = Field(
        default=60.0,
        gt=0,
        description="PostgreSQL ends a server or worker session idle this long inside a transaction (a process "
        "stopped mid-transaction), releasing the row locks other workers wait on.",
    )
    job_retention_days: int = Field(default=7, ge=1, description="Finished jobs and their events are purged after.")
    http_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP transport.")
    http_port: int = Field(default=8765, description="Port of the HTTP transport.")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="stdio transport only: serve Prometheus /metrics on this port (HTTP mode serves it at /metrics).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of METRICS_PORT.")
    # --- hostile input: HTTP session bounds, worker metrics exposure ---
    http_session_idle_seconds: float = Field(
        default=600.0,
        gt=0,
        description="An HTTP session with no request for this long is closed (client re-initializes).",
    )
    http_max_sessions: int = Field(
        default=1000,
        ge=1,
        description="Open HTTP sessions at most; past it the least recently used idle one is evicted.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the workers' Prometheus exporter (dramatiq_prom_host, if set, wins).",
    )
    # Local workers of `codebase-mcp serve` (server/supervisor.py).
    workers: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="serve starts local workers: auto (when none is attached to RabbitMQ), always, or never.",
    )
    worker_processes: int = Field(default=1, ge=1, le=64, description="Worker processes of serve's local pool.")
    worker_threads: int = Field(default=4, ge=1, le=64, description="Threads per worker process of serve's pool.")
    broker_probe_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="A tool that publishes first checks RabbitMQ's port this fast and fails at once if it is down.",
    )
    start_local_broker: bool = Field(
        default=True,
        description="When RabbitMQ's port is closed and BROKER_URL is on loopback, start the installed "
        "rabbitmq-server (as after a reboot); false only reports it.",
    )
    broker_start_wait_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="How long a tool call waits for a local RabbitMQ this server is starting before it answers "
        "'retry in a few seconds' (the start goes on).",
    )
    # Planning (issue 12: a re-index after one save reads that file, not the whole tree).
    trust_mtime: bool = Field(
        default=True,
        description=(
            "The planner takes a file whose size is the indexed one and whose mtime is older than the job that "
            "indexed it as unchanged, without reading it (git's rule); false reads and hashes every file."
        ),
    )
    # Watched repositories (issue 12 item 3, server/watcher.py).
    watch_enabled: bool = Field(
        default=True,
        description="This server may run the stored watches (one server per broker vhost and database does).",
    )
    watch_debounce_ms: int = Field(
        default=300,
        ge=0,
        le=60_000,
        description="A watched repository is re-indexed once no file of it changed for this long.",
    )
    log_level: str = Field(default="INFO", description="Log level of every process.")
    log_json: bool = Field(default=False, description="One JSON object per log line instead of text.")

    # Quickstart (issue 17): the log file, for MCP clients that swallow the server's stderr.
    log_file: Path | None = Field(
        default=None,
        description="Server and CLI also log here (rotated, masked); unset: <DATA_DIR>/logs/codebase-mcp.log.",
    )
    log_file_max_bytes: int = Field(default=10_000_000, ge=10_000, description="The log file is rotated at this size.")
    log_file_backups: int = Field(default=5, ge=0, le=100, description="Rotated log files kept (.1 is the newest).")

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()).expanduser() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        # An empty variable (``CODEBASE_MCP_AUTH_TOKEN=``) means "no token", never "the empty token".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_file", mode="before")
    @classmethod
    def _blank_log_file_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def log_path(self) -> Path:
        """The log file actually written: LOG_FILE, or its default under the data directory."""
        return (self.log_file or self.data_dir / "logs" / "codebase-mcp.log").expanduser()

    @model_validator(mode="after")
    def _overlap_below_window(self) -> Settings:
        if self.chunk_overlap_lines >= self.chunk_lines:
            raise ValueError(
                f"CHUNK_OVERLAP_LINES ({self.chunk_overlap_lines}) must be smaller than "
                f"CHUNK_LINES ({self.chunk_lines})"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
