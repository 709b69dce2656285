"""The one settings class: every knob visionq reads from the environment (prefix VISIONQ_) or `.env`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import limits
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from visionq import constants


class Settings(BaseSettings):
    """visionq's configuration; build it once (`Settings()`) and pass it on."""

    model_config = SettingsConfigDict(env_prefix="VISIONQ_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path(".visionq"), description="Model cache, and the embedded database and broker."
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672// (unset: a filesystem broker "
        "under the data dir, for one machine).",
    )
    database_url: str | None = Field(
        default=None,
        description="postgresql+psycopg://user@host/db or sqlite:///path (unset: SQLite under the data dir).",
    )
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="Type of the jobs' queue on RabbitMQ (ignored on Redis and the embedded broker): "
        "quorum replicates it across a cluster's nodes and survives losing one; classic lives on one node. "
        "An existing queue keeps its type: switching needs the queue deleted while it is empty.",
    )
    model: str = Field(default=constants.DEFAULT_MODEL, description="Model used when a request names none.")
    threads: int | None = Field(
        default=None, ge=1, description="Inference threads per process; unset: cores / worker concurrency."
    )
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        default="auto", description="Inference runtime; auto: OpenVINO where installed, else ONNX Runtime."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Compute precision of fp32 models (int8 models run int8); auto: fp32. bf16 needs "
        "OpenVINO and a CPU with AVX-512 BF16 or AMX.",
    )
    max_image_pixels: int = Field(default=constants.MAX_IMAGE_PIXELS, ge=1)
    max_image_bytes: int = Field(default=constants.MAX_IMAGE_BYTES, ge=1)
    retention: timedelta = Field(
        default=constants.DEFAULT_RETENTION, description="Finished jobs and images are purged after this."
    )
    task_time_limit: int = Field(
        default=constants.TASK_TIME_LIMIT_S,
        ge=10,
        # Below RabbitMQ's consumer_timeout, which would otherwise drop the worker's channel first.
        lt=constants.RABBITMQ_CONSUMER_TIMEOUT_S,
        description="Seconds before a detection is killed.",
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description="user:password for Flower's basic auth (several: comma-separated); required when "
        "Flower listens on an address other than loopback.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="API keys (comma-separated, each at least 20 characters): when set, or with "
        "api_keys_file, every /v1 request needs one (Authorization: Bearer KEY, or X-API-Key: KEY).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A file of hashed API keys, one `sha256-hex name` per line (`visionq keys new` "
        "makes one); read at start.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Requests per client to /v1, e.g. `100/second;10000/hour` (a client: its API key, "
        "else its address); counted in each API process. Unset: no limit.",
    )
    submit_rate_limit: str | None = Field(
        default=None,
        description="Submits (POST /v1/jobs, /v1/detect) per client, e.g. `20/second`; unset: no limit.",
    )
    max_queued_jobs: int | None = Field(
        default=constants.MAX_QUEUED_JOBS,
        ge=1,
        description="Queued jobs the service takes in all; a submit beyond it gets 503 `queue_full` "
        "(empty: no bound).",
    )
    max_queued_jobs_per_key: int | None = Field(
        default=None,
        ge=1,
        description="Queued jobs one API key may have; a submit beyond it gets 429 `too_many_queued`.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="The proxies whose X-Forwarded-For and X-Forwarded-Proto `visionq api` believes "
        "(comma-separated addresses or networks, * for any): behind a reverse proxy on another host, its "
        "address, or every client shares the proxy's address (and its rate limit).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signs every webhook (HMAC-SHA256 of `timestamp.body`); unset: submits with a "
        "callback_url are refused. The API and the workers need the same one.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let callback URLs reach loopback, private, link-local and other non-public "
        "addresses (off: nobody can aim visionq at the network it runs in).",
    )
    webhook_max_attempts: int = Field(
        default=constants.WEBHOOK_MAX_ATTEMPTS,
        ge=1,
        le=50,
        description="Tries of a webhook before it is failed.",
    )
    webhook_retry_s: float = Field(
        default=constants.WEBHOOK_RETRY_S,
        gt=0,
        le=constants.WEBHOOK_RETRY_MAX_S,
        description="Seconds before the first retry of a failed webhook; doubled after each, up to "
        f"{constants.WEBHOOK_RETRY_MAX_S} s.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or one JSON object a line (ts, level, message, job_id).",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve the API's /metrics without a key when API keys are on (it shows queue depths).",
    )

    @field_validator(
        "broker_url",
        "database_url",
        "api_keys",
        "api_keys_file",
        "webhook_secret",
        "rate_limit",
        "submit_rate_limit",
        "max_queued_jobs",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit", "submit_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                limits.parse_many(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a rate limit like `20/second;1000/hour`") from exc
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            if any(len(key) < constants.MIN_API_KEY_LENGTH for key in _split_keys(value)):
                raise ValueError(f"every API key needs at least {constants.MIN_API_KEY_LENGTH} characters")
        return value

    @property
    def plain_api_keys(self) -> list[str]:
        """The keys of VISIONQ_API_KEYS, one by one (none when unset)."""
        return _split_keys(self.api_keys) if self.api_keys is not None else []

    @property
    def models_dir(self) -> Path:
        """Where pulled and imported models live."""
        return self.data_dir / "models"

    @property
    def broker_dir(self) -> Path:
        """The embedded filesystem broker's folders (used when no broker URL is set)."""
        return self.data_dir / "broker"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'visionq.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


def _split_keys(keys: SecretStr) -> list[str]:
    return [key.strip() for key in keys.get_secret_value().split(",") if key.strip()]
