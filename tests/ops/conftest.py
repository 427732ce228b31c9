"""Fixtures for the operations tests: the worker fixtures of tests/engine, a fresh queue."""

from __future__ import annotations

import os

import pytest

from engine.embedded import free_port
from engine.settings import Settings
from tests.engine.conftest import jq, running, sample_app  # noqa: F401


@pytest.fixture
def queue() -> str:
    """A queue name of the test's own: the metrics registry is one per process, and shared."""
    return f"ops-{os.urandom(4).hex()}"


@pytest.fixture
def quiet(settings: Settings) -> Settings:
    """The test settings with a heartbeat renewed every 2 s, so most tests end before one.

    A worker stopped while a renewal is in flight can miss the cancellation of its heartbeat
    loop and never stop (seen with redis-py 8.1); these tests are not about that.
    """
    return settings.model_copy(update={"heartbeat_ttl_ms": 6000, "heartbeat_interval_ms": 2000})


@pytest.fixture
def served(quiet: Settings) -> Settings:
    """Quiet settings with the metrics endpoint on a free loopback port."""
    return quiet.model_copy(update={"metrics_port": free_port()})
