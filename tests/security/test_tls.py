"""The engine over TLS with client certificates (rediss:// and the redis_*_file settings)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.queue import JobQueue, JobSpec
from engine.settings import Settings, load_settings
from engine.worker import Worker
from tests.cluster import apps
from tests.cluster.helpers import run_until_acked
from tests.security.certs import TlsFiles
from tests.security.conftest import FAST
from tests.security.servers import TlsRedis


def _settings(server: TlsRedis, files: TlsFiles, **tls: Any) -> Settings:
    given: dict[str, Any] = {
        "redis_ca_file": files.ca,
        "redis_cert_file": files.client_cert,
        "redis_key_file": files.client_key,
    }
    return load_settings(redis_url=server.url, **(given | tls), **FAST)


async def test_a_worker_claims_and_acks_over_mutual_tls(
    tls_server: TlsRedis, tls_files: TlsFiles
) -> None:
    """With the CA, a client certificate and its key, jobs are enqueued, claimed and
    acked over TLS, and their events are in the outbox."""
    settings = _settings(tls_server, tls_files)
    jq = await JobQueue.connect(settings)
    try:
        job_ids = await jq.enqueue_many("secure", [JobSpec("record") for _ in range(5)])
        await run_until_acked(Worker(apps.app, ["secure"], settings), len(job_ids))
        events = await jq.events("secure")
    finally:
        await jq.close()

    assert sorted(f["job"] for _, f in events if f["type"] == "acked") == sorted(job_ids)


async def test_a_client_without_a_certificate_is_refused(
    tls_server: TlsRedis, tls_files: TlsFiles
) -> None:
    """The server demands a client certificate: trusting the CA alone is not enough."""
    settings = _settings(tls_server, tls_files, redis_cert_file=None, redis_key_file=None)
    with pytest.raises(RedisConnectionError):
        await JobQueue.connect(settings)


async def test_a_server_certificate_from_an_unknown_authority_is_refused(
    tls_server: TlsRedis, tls_files: TlsFiles
) -> None:
    """Without `redis_ca_file` the system's authorities are used, and none signed the
    server's certificate: the handshake fails before any command is sent."""
    settings = _settings(tls_server, tls_files, redis_ca_file=None)
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await JobQueue.connect(settings)
