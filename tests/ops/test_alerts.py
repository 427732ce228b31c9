"""The Prometheus alert rules: valid, unit-tested through promtool, on metrics that exist.

promtool comes from PATH or the PROMTOOL variable; deploy/prometheus/ensure-promtool.sh
installs it (Debian's `prometheus` package) when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "alerts.yml"
RULE_TESTS = DEPLOY / "alerts_test.yml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is not installed: run deploy/prometheus/ensure-promtool.sh "
            "(it runs apt-get install prometheus), or set PROMTOOL to its path"
        )
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_names() -> set[str]:
    """Every sample name the registry can expose, suffixes included."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_unit_tests_in_promtool(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == {rule["alert"] for rule in rules()}


def test_the_alerts_cover_the_ledger_sinks_dead_letters_reaps_and_idle_queues() -> None:
    assert {rule["alert"] for rule in rules()} >= {
        "JobqueueLedgerBackpressure", "JobqueueLedgerLagging", "JobqueueSinkDown",
        "JobqueueLedgerFallbackInUse", "JobqueueDeadLettersGrowing", "JobqueueReapBurst",
        "JobqueueNoLiveWorkers",
    }  # fmt: skip


def test_the_alerts_read_only_metrics_the_engine_exports() -> None:
    """A renamed metric would leave its alert silent forever; this catches it."""
    read = {name for rule in rules() for name in re.findall(r"\bjobqueue_\w+", rule["expr"])}
    assert read
    assert read - exported_names() == set()
