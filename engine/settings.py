"""Configuration: a YAML file, then JOBQUEUE_* environment variables, then CLI flags.

Later sources win: a CLI flag beats the environment, which beats the file. Invalid
values stop start-up with a `ConfigError` naming the setting and the rule it broke.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import ConfigError
from engine.keys import DEFAULT_NAMESPACE
from engine.names import check_name

_yaml_data: ContextVar[dict[str, Any] | None] = ContextVar("jobqueue_yaml_data", default=None)

MIB = 1024 * 1024


class _YamlSource(PydanticBaseSettingsSource):
    """Values read from the `--config` YAML file (already parsed into a context var)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_data.get() or {})


class Settings(BaseSettings):
    """Every setting of jobqueue, with its default."""

    model_config = SettingsConfigDict(env_prefix="JOBQUEUE_", extra="forbid")

    # Redis
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_ca_file: Path | None = None
    redis_cert_file: Path | None = None
    redis_key_file: Path | None = None
    namespace: str = DEFAULT_NAMESPACE
    allow_eviction_policy: bool = Field(
        default=False,
        description="Run even when Redis may evict keys (heartbeats and jobs could vanish).",
    )

    # Jobs
    lanes: list[str] = Field(default_factory=lambda: ["high", "default", "low"])
    lane_weights: list[int] = Field(default_factory=lambda: [8, 2, 1])
    default_lane: str = "default"
    max_payload_bytes: int = Field(default=MIB, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_crashes: int = Field(default=3, ge=0)
    job_retention_ms: int = Field(default=24 * 3600 * 1000, gt=0)
    idempotency_ttl_ms: int = Field(default=24 * 3600 * 1000, gt=0)
    backoff_base_ms: int = Field(default=1000, ge=0)
    backoff_cap_ms: int = Field(default=300_000, ge=0)
    max_lane_length: int = Field(default=0, ge=0, description="0 means no limit")
    max_queue_length: int = Field(default=0, ge=0, description="0 means no limit")

    # Workers
    concurrency: int = Field(default=16, ge=1, le=10_000)
    claim_batch: int = Field(default=32, ge=1, le=1000)
    heartbeat_ttl_ms: int = Field(default=30_000, ge=300)
    heartbeat_interval_ms: int = Field(default=10_000, ge=100)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    idle_block_s: float = Field(default=5.0, gt=0)

    # Circuit breaker, one per task in each worker process.
    breaker_enabled: bool = True
    breaker_failure_threshold: int = Field(default=10, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=20, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)

    # The ledger. Every worker ships its queues' outbox to rotating gzip NDJSON under
    # ledger_folder/<worker id> unless ledger_ship_in_worker is off (then run
    # `jobqueue ship` with the sink of your choice).
    ledger_ship_in_worker: bool = True
    ledger_folder: Path = Path("jobqueue-ledger")
    ledger_claim_idle_ms: int = Field(default=30_000, ge=100)
    # Ledger backpressure: past these, enqueues and claims are refused. 0 disables one.
    ledger_max_backlog: int = Field(default=1_000_000, ge=0)
    ledger_max_age_ms: int = Field(default=0, ge=0)

    # Metrics and health: /metrics, /healthz and /readyz over HTTP, served by workers and
    # by `jobqueue ship` when metrics_port is set (0 picks a free port, logged at start).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("namespace")
    @classmethod
    def _namespace_is_safe(cls, value: str) -> str:
        return check_name("namespace", value)

    @field_validator("lanes")
    @classmethod
    def _lanes_are_safe(cls, value: list[str]) -> list[str]:
        if not value:
            msg = "at least one lane is needed"
            raise ValueError(msg)
        if len(set(value)) != len(value):
            msg = f"lane names repeat: {value}"
            raise ValueError(msg)
        return [check_name("lane", lane) for lane in value]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if len(self.lane_weights) != len(self.lanes):
            msg = (
                f"lane_weights has {len(self.lane_weights)} entries but lanes has "
                f"{len(self.lanes)}: give one weight per lane"
            )
            raise ValueError(msg)
        if any(weight < 1 for weight in self.lane_weights):
            msg = "every lane weight must be at least 1"
            raise ValueError(msg)
        if self.default_lane not in self.lanes:
            msg = f"default_lane {self.default_lane!r} is not one of the lanes {self.lanes}"
            raise ValueError(msg)
        if self.heartbeat_ttl_ms < 3 * self.heartbeat_interval_ms:
            msg = (
                f"heartbeat_ttl_ms ({self.heartbeat_ttl_ms}) must be at least three "
                f"renewal intervals (3 x heartbeat_interval_ms = "
                f"{3 * self.heartbeat_interval_ms}), or one late renewal gets a live "
                "worker reaped"
            )
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def lane_weight_map(self) -> dict[str, int]:
        return dict(zip(self.lanes, self.lane_weights, strict=True))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except yaml.YAMLError as exc:
        msg = f"config file {path} is not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"config file {path} must hold a mapping of setting names to values"
        raise ConfigError(msg)
    return {str(k): v for k, v in data.items()}


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"setting {where}: {error['msg']}")
    return "; ".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the file, the environment and explicit overrides."""
    token = _yaml_data.set(_read_yaml(config_file) if config_file else {})
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _yaml_data.reset(token)
