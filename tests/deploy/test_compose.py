"""docker-compose.yml, checked against the Compose Specification and against this repository.

No Docker engine runs in the tests, so no container starts. Instead the file is validated
with the specification's JSON schema (compose-spec.json beside this file, the schema the
docker-compose 1.29.2 package on PyPI ships, Apache License 2.0), every host path it mounts
or builds must exist, every `jobqueue` command must parse, every JOBQUEUE_* variable must
load as a setting, deploy/redis/redis.conf must start a redis-server that jobqueue accepts,
and the example app must run its jobs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.cli import build_parser, load_app
from engine.connection import check_server
from engine.embedded import free_port
from engine.queue import JobQueue
from engine.settings import Settings, load_settings
from engine.worker import Worker
from tests.cluster.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
DEPLOY = REPO / "deploy"
INTERPOLATION = re.compile(r"\$\{[^}]*\}")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> Iterator[tuple[str, Service]]:
    yield from compose["services"].items()


def _schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """Every key and value of docker-compose.yml is one the specification allows."""
    jsonschema.Draft201909Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))
    assert _schema_errors(compose) == []


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    """The check is not vacuous: a misspelt service key is reported."""
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["stop_grace_periods"] = "40s"
    assert any("stop_grace_periods" in error for error in _schema_errors(broken))


def _mount_sources(service: Service) -> Iterator[str]:
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.startswith((".", "/")):
            yield volume.split(":", 1)[0]
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            yield str(volume["source"])


def _built_files(service: Service) -> Iterator[str]:
    build = service.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if build:
        yield build["context"]
        yield str(Path(build["context"]) / build.get("dockerfile", "Dockerfile"))


def test_every_file_the_compose_file_mounts_or_builds_exists(compose: dict[str, Any]) -> None:
    """Host paths of bind mounts, build contexts and Dockerfiles are in the repository."""
    named = [
        (name, path)
        for name, service in _services(compose)
        for path in (*_mount_sources(service), *_built_files(service))
    ]
    assert named, "the compose file mounts and builds nothing: the check would be vacuous"
    missing = [f"{name}: {path}" for name, path in named if not (REPO / path).exists()]
    assert missing == []


def test_every_file_copied_into_the_image_exists() -> None:
    """Each COPY source of deploy/Dockerfile exists in the build context (the repository)."""
    sources = []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    assert sources
    assert [s for s in sources if not (REPO / s).exists()] == []


def test_every_file_the_redis_start_script_reads_is_mounted() -> None:
    """start.sh reads /etc/jobqueue/<file>, where the compose file mounts deploy/redis."""
    script = (DEPLOY / "redis" / "start.sh").read_text()
    read = set(re.findall(r"/etc/jobqueue/([\w.-]+)", script))
    assert read == {"users.acl.template", "redis.conf"}
    assert all((DEPLOY / "redis" / name).is_file() for name in read)


def _jobqueue_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [
        (name, service["command"])
        for name, service in _services(compose)
        if isinstance(service.get("command"), list) and service["command"][0] == "jobqueue"
    ]


def test_every_jobqueue_command_in_the_compose_file_parses(compose: dict[str, Any]) -> None:
    """The worker and shipper commands use flags the `jobqueue` CLI has."""
    commands = _jobqueue_commands(compose)
    assert {name for name, _ in commands} >= {"worker", "shipper", "shipper-s3"}
    parser = build_parser()
    for name, command in commands:
        try:
            parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"service {name}: `{' '.join(command)}` does not parse")


def _jobqueue_environment(service: Service) -> dict[str, str]:
    """The service's JOBQUEUE_* variables, with ${...} interpolations filled in."""
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment is written as a mapping"
    return {
        key: INTERPOLATION.sub("placeholder", str(value))
        for key, value in environment.items()
        if key.startswith("JOBQUEUE_")
    }


def test_every_jobqueue_variable_in_the_compose_file_is_a_valid_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each JOBQUEUE_* variable names a setting, and each service's set of them loads."""
    fields = set(Settings.model_fields)
    for name, service in _services(compose):
        environment = _jobqueue_environment(service)
        unknown = [k for k in environment if k.removeprefix("JOBQUEUE_").lower() not in fields]
        assert unknown == [], f"service {name}"
        with monkeypatch.context() as patch:
            for key, value in environment.items():
                patch.setenv(key, value)
            load_settings()


def _start_with_config(
    binary: str, config: Path, folder: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """redis-server reading `config`, with its address and folder overridden for a test."""
    port = free_port()
    args = [binary, str(config), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(folder), "--logfile", str(folder / "redis.log")]  # fmt: skip
    with (folder / "stderr.log").open("wb") as errors:  # config errors come before the log
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
    return process, port


def _exited(process: subprocess.Popen[bytes], errors: Path) -> str:
    """What a server that exited wrote on stderr; empty while it runs."""
    return "" if process.poll() is None else errors.read_text() or "(nothing)"


async def _wait_for_ping(client: Redis, process: subprocess.Popen[bytes], errors: Path) -> None:
    async def answers() -> bool:
        exited = _exited(process, errors)
        assert not exited, f"redis-server exited: {exited}"
        try:
            return bool(await client.ping())
        except RedisConnectionError:
            return False

    await wait_until(answers, timeout_s=10)


async def test_the_deploy_redis_config_starts_a_server_jobqueue_accepts(tmp_path: Path) -> None:
    """deploy/redis/redis.conf appends every write to the AOF and never evicts: jobqueue's
    start-up check accepts the server it configures."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH")
    process, port = _start_with_config(binary, DEPLOY / "redis" / "redis.conf", tmp_path)
    client = Redis(port=port, decode_responses=True)
    try:
        await _wait_for_ping(client, process, tmp_path / "stderr.log")
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        await check_server(client, load_settings())
    finally:
        await client.aclose()
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
async def test_the_example_app_runs_its_jobs_and_dead_letters_a_bad_one(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker of the compose file runs deploy/example_app.py: a welcome email and a
    report are acked, and an email without an address is dead-lettered at once."""
    monkeypatch.syspath_prepend(str(DEPLOY))
    app = load_app("example_app")
    jq = await JobQueue.connect(settings)
    try:
        await jq.enqueue("emails", "send_welcome", {"to": "ada@example.com"})
        await jq.enqueue("emails", "send_welcome", {"name": "no address"})
        await jq.enqueue("reports", "build_report", {"day": "2026-01-31", "rows": 100})
        worker = Worker(app, ["emails", "reports"], settings)
        await _run_until(worker, acked=2, failed=1)
        (letter,) = await jq.dead_letters("emails")
    finally:
        await jq.close()
    assert letter["dead_reason"] == "non_retryable"


async def _run_until(worker: Worker, *, acked: int, failed: int) -> None:
    task = asyncio.create_task(worker.run())

    async def done() -> bool:
        return worker.stats["acked"] == acked and worker.stats["failed"] == failed

    try:
        await wait_until(done)
    finally:
        worker.stop()
        await task
