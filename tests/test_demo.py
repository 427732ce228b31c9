"""`jobqueue demo` end to end: every act of the scenario happens and the verdict is ok."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_runs_its_whole_scenario_and_exits_0() -> None:
    """A worker killed mid-job, retries, a dead letter, a sink outage and its drain, the
    replay autopsy and `replay verify`: all on a private redis-server, nothing left."""
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--jobs", "600"],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for check in (
        "a worker was killed mid-job",
        "its job was reaped and finished elsewhere",
        "the flaky task succeeded after retries",
        "the poison job is a dead letter",
        "the fallback took events and was drained",
        "replay verify agrees with Redis",
    ):
        assert f"ok   {check}" in out
    assert "No divergence" in out
    assert "SIGKILL to worker" in out
    leftovers = subprocess.run(["pgrep", "-f", "engine.demo_app"], capture_output=True, check=False)
    assert leftovers.stdout == b"", "the demo left worker processes running"
