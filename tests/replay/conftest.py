"""Fixtures of the replay tests: the sink tests' Kafka and S3 servers, and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.engine.conftest import running, sample_app
from tests.replay.helpers import CliResult, run_replay
from tests.sinks.conftest import kafka_broker, kafka_topic, moto_process, s3_server

__all__ = [
    "kafka_broker", "kafka_topic", "moto_process", "replay", "running", "s3_server", "sample_app",
]  # fmt: skip

Replay = Callable[..., CliResult]


@pytest.fixture
def replay(capsys: pytest.CaptureFixture[str]) -> Replay:
    """Run `replay` with the given arguments; returns its exit code, stdout and stderr."""

    def run(*argv: str) -> CliResult:
        return run_replay(capsys, list(argv))

    return run
