"""The one Redis client factory, and the start-up check that Redis is fit for a queue.

URL forms of `redis_url`:

    redis://[user:password@]host:port/db              one server (rediss:// for TLS)
    redis+cluster://[user:password@]host:port[,...]   a Redis Cluster, found from these
                                                      nodes (rediss+cluster:// for TLS)
    redis+sentinel://[user:password@]host:port[,...]/service[/db]
                                                      the master Sentinel names `service`

Credentials in the URL are the data nodes' ones; Sentinel itself is reached without them.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, ResponseError

from engine.errors import ConfigError
from engine.settings import Settings

MIN_REDIS_VERSION = (6, 2)
# Connections per cluster node: blocking reads, acks and failures of a full worker at once.
CLUSTER_SPARE_CONNECTIONS = 64


def create_redis(settings: Settings, **extra: Any) -> Redis:
    """A redis-py asyncio client for `settings.redis_url` (see the URL forms above).

    A cluster client is a `RedisCluster`, typed here as `Redis`: the engine uses only the
    commands both offer, and every script and pipeline stays inside one queue's slot.
    """
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    url = settings.redis_url.get_secret_value()
    scheme, _, rest = url.partition("://")
    if scheme.startswith("rediss"):
        options.update(_tls_options(settings))
    options.update(extra)
    if scheme in ("redis+cluster", "rediss+cluster"):
        options.setdefault("max_connections", settings.concurrency + CLUSTER_SPARE_CONNECTIONS)
        options["ssl"] = scheme == "rediss+cluster"
        return cast(Redis, _cluster(rest, options))
    if scheme == "redis+sentinel":
        return _sentinel_master(rest, options)
    return Redis.from_url(url, **options)


def _tls_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.redis_ca_file:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    if settings.redis_cert_file:
        options["ssl_certfile"] = str(settings.redis_cert_file)
    if settings.redis_key_file:
        options["ssl_keyfile"] = str(settings.redis_key_file)
    return options


def _nodes(netloc: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Credentials and (host, port) pairs of `user:password@host:port,host:port`."""
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    credentials = {"username": unquote(username), "password": unquote(password)}
    pairs = [node.rpartition(":") for node in hosts.split(",")]
    if not all(host and port.isdigit() for host, _, port in pairs):
        # Never echo the URL: it may hold a password.
        msg = "redis_url must list its nodes as host:port[,host:port...]"
        raise ConfigError(msg)
    nodes = [(host, int(port)) for host, _, port in pairs]
    return {k: v for k, v in credentials.items() if v}, nodes


def _cluster(rest: str, options: dict[str, Any]) -> RedisCluster:
    netloc, _, _ = rest.partition("/")
    credentials, nodes = _nodes(netloc)
    startup = [ClusterNode(host, port) for host, port in nodes]
    return RedisCluster(startup_nodes=startup, **(options | credentials))


class _SentinelMaster(Redis):
    """The master Sentinel names; closing it closes the connections to Sentinel too."""

    sentinel_clients: tuple[Redis, ...] = ()

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinel_clients:
            await client.aclose()


def _sentinel_master(rest: str, options: dict[str, Any]) -> Redis:
    netloc, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    if not service or not (db or "0").isdigit():
        msg = "a Sentinel URL reads redis+sentinel://host:port[,host:port...]/SERVICE[/DB]"
        raise ConfigError(msg)
    credentials, nodes = _nodes(netloc)
    options |= credentials | {"db": int(db or 0)}
    sentinel_options = {"decode_responses": True}
    # redis-py ships Sentinel without annotations.
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    master = sentinel.master_for(unquote(service), redis_class=_SentinelMaster, **options)
    master.sentinel_clients = tuple(sentinel.sentinels)
    return cast(Redis, master)


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in str(info.get("redis_version", "0")).split(".")[:2])


async def _info(redis: Redis, section: str) -> list[dict[str, Any]]:
    """One INFO section of every server holding data (each master of a cluster)."""
    if isinstance(redis, RedisCluster):
        replies = await redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        return list(cast(dict[str, dict[str, Any]], replies).values())
    return [await redis.info(section)]


async def check_server(redis: Redis, settings: Settings) -> None:
    """Refuse a Redis that is too old, or that may evict heartbeats and job records."""
    try:
        servers = await _info(redis, "server")
        memories = await _info(redis, "memory")
    except AuthenticationError as exc:
        # redis-py's message names neither the user nor the password; keep it that way.
        msg = f"Redis refused the credentials in redis_url: {exc}"
        raise ConfigError(msg) from None
    except ResponseError as exc:
        msg = f"cannot read INFO from Redis: {exc}"
        raise ConfigError(msg) from exc
    for info, memory in zip(servers, memories, strict=True):
        _check_one(info, memory, settings)


def _check_one(info: dict[str, Any], memory: dict[str, Any], settings: Settings) -> None:
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
