"""The command line's manners: times, exit codes, one-line errors, output for terminals and
pipes, and the benchmark's entry point."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from replay.bench import run_bench
from replay.errors import BadInput
from replay.render import Output, Table, progress_bars
from replay.sources import NoProgress
from replay.times import format_duration, format_ts, parse_time
from tests.replay.conftest import Replay

NOW = 1_764_763_200_000  # 2025-12-03T12:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-15m", NOW - 15 * 60_000),
        ("-2h", NOW - 2 * 3_600_000),
        ("-1d", NOW - 86_400_000),
        ("-90s", NOW - 90_000),
        ("-1.5h", NOW - 5_400_000),
        ("2025-12-03T12:00:00Z", NOW),
        ("2025-12-03T13:00:00+01:00", NOW),
        ("2025-12-03T12:00:00", NOW),
        ("2025-12-03T12:00:00.250Z", NOW + 250),
    ],
)
def test_times_are_iso_8601_or_relative_to_now(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-15", "15m", "2025-13-01", ""])
def test_a_time_that_is_neither_raises_bad_input_naming_both_forms(text: str) -> None:
    with pytest.raises(BadInput, match=r"ISO 8601 .* relative to now"):
        parse_time(text, now=NOW)


def test_times_and_durations_print_in_utc_with_milliseconds() -> None:
    assert format_ts(NOW + 7) == "2025-12-03T12:00:00.007Z"
    assert [format_duration(ms) for ms in (850, 12_300, 245_000, 7_380_000, 270_000_000)] == [
        "850ms", "12.3s", "4m05s", "2h03m", "3d03h",
    ]  # fmt: skip


def test_a_relative_time_may_follow_its_option_as_a_separate_argument(
    tmp_path: Path, replay: Replay
) -> None:
    """`--since -15m` would read as an unknown option to argparse; replay takes it."""
    (tmp_path / "ledger").mkdir()

    result = replay(
        "incident", "--since", "-15m", "--until", "-1m", "--source", str(tmp_path / "ledger")
    )

    assert result.code == 0, result.err
    assert "0 events in the window" in result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["job", "j1"], "the following arguments are required: --source"),
        (["state", "--source", "x", "--at", "soon"], "cannot read the time 'soon'"),
        (["incident", "--source", "x", "--since", "now", "--until", "-1h"], "is after --until"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["query", "--source", "kafka://host:9092"], "is not kafka://host:port/topic"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_reason(
    argv: list[str], message: str, replay: Replay
) -> None:
    result = replay(*argv)

    assert result.code == 2
    [line] = result.err.strip().splitlines()
    assert line.startswith("replay: ")
    assert message in line


def test_help_exits_0(replay: Replay) -> None:
    assert replay("--help").code == 0
    assert replay("query", "--help").code == 0


def test_a_terminal_gets_rich_tables_and_a_pipe_plain_text() -> None:
    table = Table("Facts", ("fact", "value"), [["outcome", "done"], ["time queued", "3ms"]])
    plain, rich = io.StringIO(), io.StringIO()

    Output(plain, rich=False).table(table)
    Output(rich, rich=True).table(table)

    assert plain.getvalue() == "\nFacts\nfact         value\noutcome      done\ntime queued  3ms\n"
    assert "─" in rich.getvalue()
    assert "outcome" in rich.getvalue()


def test_progress_bars_are_only_drawn_on_a_terminal() -> None:
    with progress_bars(io.StringIO()) as factory:
        assert factory is NoProgress


def test_the_benchmark_times_a_rebuild_and_a_lookup(tmp_path: Path) -> None:
    """The lead's bench calls this with a million events; here a small ledger will do."""
    result = run_bench(tmp_path / "ledger", 4000)

    assert result.events == 4000
    assert result.job_events > 0
    assert result.full_read_s > 0
    assert result.rebuild_s > 0
    assert result.job_lookup_s > 0
    again = run_bench(tmp_path / "ledger", 4000)  # the ledger is reused, not written again
    assert again.bytes_on_disk == result.bytes_on_disk
