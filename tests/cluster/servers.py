"""A three-master Redis Cluster and a Redis Sentinel, each process on free loopback ports.

Every node is an `EmbeddedRedis` in its own folder; `redis-cli --cluster create` joins
them and hands out the 16,384 slots. Nothing here touches a server the tests did not start.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import redis
from redis.crc import key_slot

from engine.embedded import EmbeddedRedis, free_port

READY_TIMEOUT_S = 20.0
POLL_S = 0.05


def redis_cli() -> Path:
    """The redis-cli beside the redis-server on PATH (it creates the cluster)."""
    found = shutil.which("redis-cli")
    if found is None:
        msg = "redis-cli is not on PATH: the cluster tests need it to create a cluster"
        raise RuntimeError(msg)
    return Path(found)


def _wait(condition: str, check: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_S)
    msg = f"{condition} did not happen within {timeout_s:g}s"
    raise RuntimeError(msg)


@dataclass
class LocalCluster:
    """Three masters, no replicas; `url` is the engine's cluster URL of the first node."""

    binary: Path
    folder: Path
    masters: int = 3
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> LocalCluster:
        try:
            for n in range(self.masters):
                node = EmbeddedRedis(
                    self.binary, self.folder / f"node-{n}", extra=self._node_args()
                )
                self.nodes.append(node.start())
            self._create()
            for node in self.nodes:
                _wait(f"cluster_state:ok on port {node.port}", partial(self._ok, node))
        except BaseException:
            self.stop()  # no node outlives a failed start
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_of(self, key: str) -> int:
        """The port of the master that serves `key`'s slot."""
        slot = key_slot(key.encode())
        with redis.Redis(port=self.nodes[0].port, decode_responses=True) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        msg = f"no master serves slot {slot}"
        raise RuntimeError(msg)

    def _node_args(self) -> list[str]:
        # The bus port is chosen too: the default (port + 10000) may be past 65535.
        return [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000",
        ]  # fmt: skip

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [str(redis_cli()), "--cluster", "create", *addresses,
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=READY_TIMEOUT_S,
        )  # fmt: skip

    @staticmethod
    def _ok(node: EmbeddedRedis) -> bool:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            info = client.execute_command("CLUSTER INFO")
        return bool(info.get("cluster_state") == "ok")


@dataclass
class LocalSentinel:
    """One master and one Sentinel watching it under `service`."""

    binary: Path
    folder: Path
    service: str = "jobqueue"
    master: EmbeddedRedis | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def start(self) -> LocalSentinel:
        try:
            self._start()
        except BaseException:
            self.stop()  # neither process outlives a failed start
            raise
        return self

    def _start(self) -> None:
        self.master = EmbeddedRedis(self.binary, self.folder / "master").start()
        config = self.folder / "sentinel.conf"  # Sentinel rewrites its file: it must be ours
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
        )
        log = self.folder / "sentinel.log"
        self.process = subprocess.Popen(
            [str(self.binary), str(config), "--sentinel", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(f"Sentinel on port {self.port} to know {self.service!r}", self._knows_master)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)
        if self.master is not None:
            self.master.stop()

    def _knows_master(self) -> bool:
        try:
            with redis.Redis(port=self.port, decode_responses=True) as client:
                found = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        except redis.ConnectionError:
            return False
        return bool(found)
