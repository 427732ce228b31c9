"""The results table, the machine it was measured on, and bench/RESULTS-engine.md."""

from __future__ import annotations

import os
import platform
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import redis as redis_py
from redis.utils import HIREDIS_AVAILABLE

from bench.harness import Row, Sizes
from bench.throughput import PEERS
from engine.embedded import server_version

HEADERS = Row("section", "measurement", "result", "target", "notes")
FOOTNOTES = [
    PEERS,
    "Subprocess rates run from the worker's registration to empty lanes and processing",
    "lists, polled every 50 ms. Workers ship the outbox to NDJSON unless a row says not.",
]


def table(rows: list[Row]) -> str:
    """Plain text, one column per Row field, aligned; footnotes under it."""
    cells = [(r.section, r.measure, r.result, r.target, r.note) for r in [HEADERS, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", *FOOTNOTES]
    return "\n".join(line.rstrip() for line in lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def machine(binary: Path) -> dict[str, str]:
    parser = "hiredis" if HIREDIS_AVAILABLE else "pure Python (hiredis is not installed)"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "redis-server": f"{server_version(binary)} ({binary})",
        "redis-py": f"{redis_py.__version__}, reply parser {parser}",
    }


def results_markdown(rows: list[Row], details: dict[str, str], sizes: Sizes) -> str:
    size_list = ", ".join(f"{f.name}={getattr(sizes, f.name):,}" for f in fields(sizes))
    lines = [
        "# Engine benchmark results",
        "",
        "Written by `make bench` (bench/run.py; bench/README.md says what each row measures).",
        "One run: on a machine shared with other work the numbers are noisy, so compare rows",
        "of one run and expect 10-20% between runs.",
        "",
        *(f"- {name}: {value}" for name, value in details.items()),
        f"- sizes: {size_list}",
        "",
        "```text",
        table(rows),
        "```",
        "",
    ]
    return "\n".join(lines)
