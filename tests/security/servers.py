"""Redis servers that demand credentials: one under the deploy ACL, one behind mutual TLS."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from engine.embedded import EmbeddedRedis
from tests.security.certs import TlsFiles

REPO = Path(__file__).resolve().parents[2]
ACL_TEMPLATE = REPO / "deploy" / "redis" / "users.acl.template"
PLACEHOLDER = "JOBQUEUE_PASSWORD_SHA256"  # what deploy/redis/start.sh replaces
ADMIN = ("test-admin", "test-admin-password")  # reads ACL LOG; not part of the deploy ACL


def render_acl(password: str) -> str:
    """The deploy ACL with `password` set as deploy/redis/start.sh sets it, plus a test admin."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    rules = ACL_TEMPLATE.read_text().replace(PLACEHOLDER, digest)
    return rules + f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n"


def acl_redis(binary: Path, folder: Path, password: str) -> EmbeddedRedis:
    """A server whose users are those of the deploy ACL (not started)."""
    folder.mkdir(parents=True, exist_ok=True)
    acl = folder / "users.acl"
    acl.write_text(render_acl(password))
    return EmbeddedRedis(binary, folder, extra=["--aclfile", str(acl)])


@dataclass
class TlsRedis(EmbeddedRedis):
    """A server that speaks TLS only, on `port`, and demands a client certificate."""

    files: TlsFiles | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def start(self) -> TlsRedis:
        assert self.files is not None
        f = self.files
        self.extra = [
            "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "yes",
            "--tls-cert-file", str(f.server_cert), "--tls-key-file", str(f.server_key),
            "--tls-ca-cert-file", str(f.ca),
        ]  # fmt: skip
        super().start()
        return self

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        assert self.files is not None
        client = redis.Redis(
            port=self.port, ssl=True, ssl_ca_certs=str(self.files.ca),
            ssl_certfile=str(self.files.client_cert), ssl_keyfile=str(self.files.client_key),
            socket_connect_timeout=0.2,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        try:
            while not self._answers(client):
                self._check_alive()
                if time.monotonic() > deadline:
                    msg = f"TLS redis-server on port {self.port} did not answer in {timeout_s}s"
                    raise RuntimeError(msg)
                time.sleep(0.02)
        finally:
            client.close()

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
