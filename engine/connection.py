"""The one Redis client factory, and the start-up check that Redis is fit for a queue."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.errors import ConfigError
from engine.settings import Settings

MIN_REDIS_VERSION = (6, 2)


def create_redis(settings: Settings, **extra: Any) -> Redis:
    """A redis-py asyncio client for `settings.redis_url` (redis:// or rediss://)."""
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    url = settings.redis_url.get_secret_value()
    if url.startswith("rediss://"):
        if settings.redis_ca_file:
            options["ssl_ca_certs"] = str(settings.redis_ca_file)
        if settings.redis_cert_file:
            options["ssl_certfile"] = str(settings.redis_cert_file)
        if settings.redis_key_file:
            options["ssl_keyfile"] = str(settings.redis_key_file)
    options.update(extra)
    return Redis.from_url(url, **options)


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in str(info.get("redis_version", "0")).split(".")[:2])


async def check_server(redis: Redis, settings: Settings) -> None:
    """Refuse a Redis that is too old, or that may evict heartbeats and job records."""
    try:
        info = await redis.info("server")
        memory = await redis.info("memory")
    except ResponseError as exc:
        msg = f"cannot read INFO from Redis: {exc}"
        raise ConfigError(msg) from exc
    version = _version(info)
    if version < MIN_REDIS_VERSION:
        msg = f"Redis {info.get('redis_version')} is too old: jobqueue needs 6.2 or newer"
        raise ConfigError(msg)
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction" and not settings.allow_eviction_policy:
        msg = (
            f"Redis maxmemory-policy is {policy!r}: it may evict heartbeat keys and job "
            "records, losing jobs. Set it to 'noeviction' (CONFIG SET maxmemory-policy "
            "noeviction), or accept the risk with allow_eviction_policy "
            "(JOBQUEUE_ALLOW_EVICTION_POLICY=true)"
        )
        raise ConfigError(msg)
