"""Secrets stay secret: no setting, error message or log line shows the Redis password."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.connection import create_redis
from engine.embedded import EmbeddedRedis
from engine.errors import ConfigError
from engine.settings import load_settings
from tests.security.conftest import user_url
from tests.security.servers import REPO

SECRET = "hunter2-but-longer"
START_TIMEOUT_S = 15.0

COMMANDS = {
    "worker": (
        ["engine.cli", "worker", "billing", "--app", "tests.cluster.apps"],
        "worker_started",
    ),
    "shipper": (
        ["engine.cli", "ship", "--sink", "ndjson", "--folder", "{tmp}/out"],
        "shipper_started",
    ),
}


def test_settings_never_show_the_redis_password() -> None:
    """repr, str and JSON of the settings mask the URL, and so does a validation error."""
    settings = load_settings(redis_url=f"redis://jobqueue:{SECRET}@redis.internal:6379/0")
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url=f"redis://jobqueue:{SECRET}@h:1/0", concurrency=0)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://jobqueue:{SECRET}@",
        f"redis+cluster://jobqueue:{SECRET}@host-without-port",
        f"redis+sentinel://jobqueue:{SECRET}@sentinel:26379",
    ],
)
def test_a_malformed_cluster_or_sentinel_url_is_refused_without_echoing_it(url: str) -> None:
    """A URL the factory cannot read is refused with the form it expects, not the URL."""
    with pytest.raises(ConfigError, match="host:port") as caught:
        create_redis(load_settings(redis_url=url))
    assert SECRET not in str(caught.value)


def _command(name: str, tmp_path: Path) -> list[str]:
    args, _ = COMMANDS[name]
    return [sys.executable, "-m", *(arg.format(tmp=tmp_path) for arg in args)]


def _run_until_started(name: str, url: str, tmp_path: Path) -> tuple[int, str]:
    """Run a CLI command with the URL in its environment, stop it once it logged its start
    event, and return its exit code and everything it wrote."""
    env = os.environ | {
        "JOBQUEUE_REDIS_URL": url,
        "JOBQUEUE_LEDGER_FOLDER": str(tmp_path / "ledger"),
        "JOBQUEUE_LEDGER_SHIP_IN_WORKER": "true",
    }
    command = [*_command(name, tmp_path), "--log-level", "DEBUG"]
    log = tmp_path / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(COMMANDS[name][1], log, process)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=START_TIMEOUT_S)
    return code, log.read_text()


def _wait_for(text: str, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text() and process.poll() is None:
        assert time.monotonic() < deadline, f"no {text} within {START_TIMEOUT_S:g}s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_worker_and_shipper_never_log_the_password(
    name: str, acl_server: EmbeddedRedis, password: str, tmp_path: Path
) -> None:
    """`jobqueue worker` and `jobqueue ship` at DEBUG level, from start to SIGTERM, write
    their events without the password from JOBQUEUE_REDIS_URL."""
    code, output = _run_until_started(name, user_url(acl_server, password), tmp_path)
    assert code == 0, output
    assert COMMANDS[name][1] in output
    assert password not in output


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_refused_password_stops_the_cli_with_a_clear_message_that_hides_it(
    name: str, acl_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A wrong password exits with code 2 and one line saying Redis refused the credentials."""
    env = os.environ | {"JOBQUEUE_REDIS_URL": user_url(acl_server, SECRET)}
    done = subprocess.run(
        _command(name, tmp_path),
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "refused the credentials" in done.stderr
    assert SECRET not in done.stdout + done.stderr
