"""Fixtures for the security tests: servers that demand a password or a certificate."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.embedded import EmbeddedRedis
from engine.settings import Settings, load_settings
from tests.security.certs import TlsFiles, make_tls_files
from tests.security.servers import TlsRedis, acl_redis

FAST: dict[str, Any] = {
    "heartbeat_ttl_ms": 1500,
    "heartbeat_interval_ms": 500,
    "idle_block_s": 1.0,
    "backoff_base_ms": 10,
    "backoff_cap_ms": 50,
    "shutdown_grace_s": 5.0,
    "breaker_enabled": False,
}


@pytest.fixture(scope="module")
def redis_binary() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("the security tests need redis-server (6.2 or newer, built with TLS)")
    return Path(found)


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def acl_server(redis_binary: Path, tmp_path: Path, password: str) -> Iterator[EmbeddedRedis]:
    """A server whose only users are those of deploy/redis/users.acl.template."""
    server = acl_redis(redis_binary, tmp_path / "acl-redis", password)
    try:
        yield server.start()
    finally:
        server.stop()


def user_url(server: EmbeddedRedis, password: str, user: str = "jobqueue") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
def acl_settings(acl_server: EmbeddedRedis, password: str, tmp_path: Path) -> Settings:
    """The `jobqueue` user's settings, with the worker shipping its ledger under tmp_path."""
    return load_settings(
        redis_url=user_url(acl_server, password),
        ledger_ship_in_worker=True,
        ledger_folder=tmp_path / "ledger",
        **FAST,
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(redis_binary: Path, tls_files: TlsFiles, tmp_path: Path) -> Iterator[TlsRedis]:
    """A server on TLS only (no plain port) that wants a client certificate."""
    server = TlsRedis(redis_binary, tmp_path / "tls-redis", files=tls_files)
    try:
        yield server.start()
    finally:
        server.stop()
