"""Tables and JSON documents for each command, built from what the analysis found."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from replay.anomalies import Anomaly
from replay.events import FIELDS, Event
from replay.history import Attempt, JobHistory
from replay.incident import Incident, total_ms
from replay.merge import Ledger
from replay.render import Table
from replay.state import QueueState
from replay.times import format_duration, format_ts
from replay.verify import VerifyReport

SHOWN_IDS: Final = 10
SHOWN_PROBLEMS: Final = 10
QUERY_COLUMNS: Final = (
    "server time", "event id", "event", "job", "seq", "lane", "task", "worker", "attempt",
    "detail", "source",
)  # fmt: skip


def _ids(ids: Sequence[str]) -> str:
    more = f" (+{len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


def _opt(value: object) -> str:
    return "" if value is None else str(value)


def sources_label(ledger: Ledger, event: Event) -> str:
    return ",".join(sorted(ledger.sources_of(event)))


# -- sources ---------------------------------------------------------------------------------


def sources_table(ledger: Ledger) -> Table:
    table = Table("Sources", ("name", "address", "events", "problems"))
    for report in ledger.reports:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.counts.items()))
        problems = f"{report.problem_count} ({kinds})" if kinds else "0"
        table.rows.append([report.name, report.address, str(report.events), problems])
    return table


def sources_summary(ledger: Ledger) -> str:
    return (
        f"{len(ledger.events)} distinct events; {ledger.duplicates} duplicate"
        f"{'s' * (ledger.duplicates != 1)} dropped"
    )


def problem_lines(ledger: Ledger) -> list[str]:
    """For stderr: each source's counts, then its first few problems, one line each."""
    lines = []
    for report in ledger.reports:
        if not report.problem_count:
            continue
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.counts.items()))
        lines.append(
            f"{report.name}: {report.problem_count} unreadable ({kinds}); "
            f"{report.events} events read from {report.address}"
        )
        lines += [f"{report.name}: {p.kind} at {p}" for p in report.problems[:SHOWN_PROBLEMS]]
        if report.problem_count > SHOWN_PROBLEMS:
            lines.append(f"{report.name}: ... and {report.problem_count - SHOWN_PROBLEMS} more")
    return lines


def sources_json(ledger: Ledger) -> dict[str, Any]:
    return {
        "sources": [
            {
                "name": report.name,
                "address": report.address,
                "events": report.events,
                "problems": dict(report.counts),
                "problem_examples": [
                    {"kind": p.kind, "where": p.where, "reason": p.reason}
                    for p in report.problems[:SHOWN_PROBLEMS]
                ],
            }
            for report in ledger.reports
        ],
        "events": len(ledger.events),
        "duplicates": ledger.duplicates,
    }


def event_json(ledger: Ledger, event: Event) -> dict[str, Any]:
    return {**event.to_record(), "sources": sorted(ledger.sources_of(event))}


# -- anomalies -------------------------------------------------------------------------------


def anomalies_table(anomalies: Iterable[Anomaly], *, with_job: bool = False) -> Table:
    columns = (
        ("job", "code", "event id", "message") if with_job else ("code", "event id", "message")
    )
    table = Table("Anomalies", columns)
    for anomaly in anomalies:
        row = [anomaly.code, anomaly.event_id, anomaly.message]
        table.rows.append([anomaly.job_id, *row] if with_job else row)
    return table


# -- job -------------------------------------------------------------------------------------


def timeline_table(history: JobHistory, ledger: Ledger) -> Table:
    columns = (
        "seq", "server time", "+since", "event", "lane", "worker", "attempt", "detail", "source",
    )  # fmt: skip
    table = Table("Timeline", columns)
    for row in history.rows:
        event = row.event
        since = (
            "" if row.since_previous_ms is None else f"+{format_duration(row.since_previous_ms)}"
        )
        table.rows.append([
            _opt(event.seq), format_ts(event.ts_ms), since, event.type, _opt(event.lane),
            _opt(event.worker), _opt(event.attempt), row.detail, sources_label(ledger, event),
        ])  # fmt: skip
    return table


def facts_table(history: JobHistory) -> Table:
    table = Table("Facts", ("fact", "value"))
    rows = table.rows
    rows.append(["outcome", history.outcome])
    queued = history.queued_ms
    rows.append(["time queued", "no claim" if queued is None else format_duration(queued)])
    for i, attempt in enumerate(history.attempts, start=1):
        rows.append(
            [f"attempt {attempt.number or i}", _attempt_fact(attempt, history.window_end_ms)]
        )
    rows.append(["largest heartbeat gap", _gap_fact(history)])
    return table


def _attempt_fact(attempt: Attempt, end_ms: int) -> str:
    run = format_duration(attempt.run_ms(end_ms))
    ended = "still open" if attempt.closed is None else f"ended by {attempt.outcome}"
    return f"on {attempt.worker}, claimed {format_ts(attempt.claimed.ts_ms)}, ran {run}, {ended}"


def _gap_fact(history: JobHistory) -> str:
    gap = history.largest_heartbeat_gap()
    if gap is None:
        return "no claim"
    gap_ms, ttl_ms = gap
    if ttl_ms is None:
        return f"{format_duration(gap_ms)} (no heartbeat named the job; TTL unknown)"
    verdict = "over" if gap_ms > ttl_ms else "within"
    return f"{format_duration(gap_ms)}, {verdict} the TTL of {format_duration(ttl_ms)}"


def job_json(history: JobHistory, ledger: Ledger) -> dict[str, Any]:
    gap = history.largest_heartbeat_gap()
    end = history.window_end_ms
    return {
        "queue": history.queue,
        "job_id": history.job_id,
        "task": history.task,
        "state": history.state,
        "outcome": history.outcome,
        "queued_ms": history.queued_ms,
        "largest_heartbeat_gap_ms": gap[0] if gap else None,
        "heartbeat_ttl_ms": gap[1] if gap else None,
        "attempts": [
            {
                "attempt": a.number,
                "worker": a.worker,
                "token": a.token,
                "claimed_ms": a.claimed.ts_ms,
                "ended_ms": None if a.closed is None else a.end_ms(end),
                "ended_by": a.outcome,
                "run_ms": a.run_ms(end),
                "largest_heartbeat_gap_ms": a.largest_gap_ms(end),
                "heartbeat_ttl_ms": a.ttl_ms(),
            }
            for a in history.attempts
        ],
        "events": [
            {
                **event_json(ledger, row.event),
                "since_previous_ms": row.since_previous_ms,
                "detail": row.detail,
            }
            for row in history.rows
        ],
        "anomalies": [anomaly.to_dict() for anomaly in history.anomalies],
    }


# -- state -----------------------------------------------------------------------------------


def state_tables(queue: QueueState) -> list[Table]:
    lanes = Table("Ready, per lane", ("lane", "ready", "job ids, head first"))
    for lane, ids in sorted(queue.lanes.items()):
        lanes.rows.append([lane, str(len(ids)), _ids(list(ids))])
    flight = Table("In flight, per worker", ("worker", "jobs", "job ids"))
    for worker, held in queue.in_flight().items():
        flight.rows.append([worker, str(len(held)), _ids(held)])
    scheduled = Table(f"Scheduled ({len(queue.scheduled)})", ("job", "due"))
    for job_id, due in sorted(queue.scheduled.items(), key=lambda item: item[1])[:SHOWN_IDS]:
        scheduled.rows.append([job_id, format_ts(due)])
    dead = Table("Dead letters", ("dead", "job ids, oldest first"))
    dead.rows.append([str(len(queue.dead)), _ids(list(queue.dead))])
    return [lanes, flight, scheduled, dead]


def state_summary(queue: QueueState) -> list[str]:
    states = ", ".join(f"{state} {count}" for state, count in sorted(queue.job_states().items()))
    return [
        f"paused: {'yes' if queue.paused else 'no'}",
        f"workers registered: {', '.join(sorted(queue.workers)) or 'none'}",
        f"job states: {states or 'none'}",
    ]


def state_json(queue: QueueState) -> dict[str, Any]:
    return {
        "queue": queue.queue,
        "paused": queue.paused,
        "lanes": {lane: list(ids) for lane, ids in sorted(queue.lanes.items())},
        "in_flight": queue.in_flight(),
        "scheduled": dict(sorted(queue.scheduled.items(), key=lambda item: item[1])),
        "dead": list(queue.dead),
        "workers": sorted(queue.workers),
        "job_states": dict(queue.job_states()),
        "events": queue.events,
    }


# -- verify ----------------------------------------------------------------------------------


def verify_table(report: VerifyReport) -> Table:
    table = Table("Divergences", ("queue", "what", "ledger", "redis"))
    for found in report.divergences:
        table.rows.append([found.queue, found.subject, found.ledger, found.live])
    return table


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "queues": report.queues,
        "divergences": [found.to_dict() for found in report.divergences],
        "jobs_compared": report.jobs_compared,
        "jobs_changed_during_check": report.jobs_moved_on,
    }


# -- query -----------------------------------------------------------------------------------


def short_detail(event: Event) -> str:
    parts = [event.error or "", event.reason or ""]
    parts += [f"{key}={value}" for key, value in sorted(event.attributes.items())]
    return "; ".join(part for part in parts if part)[:100]


def query_table(events: Iterable[Event], ledger: Ledger) -> Table:
    table = Table(None, QUERY_COLUMNS)
    for event in events:
        table.rows.append([
            format_ts(event.ts_ms), event.event_id, event.type, _opt(event.job_id), _opt(event.seq),
            _opt(event.lane), _opt(event.task), _opt(event.worker), _opt(event.attempt),
            short_detail(event), sources_label(ledger, event),
        ])  # fmt: skip
    return table


def query_csv(events: Iterable[Event], ledger: Ledger) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["event_id", *FIELDS, "sources"])
    for event in events:
        record = event.to_record()
        record["attributes"] = json.dumps(record["attributes"], sort_keys=True)
        writer.writerow(
            [*(_opt(record[name]) for name in ("event_id", *FIELDS)), sources_label(ledger, event)]
        )
    return out.getvalue()


def query_json_lines(events: Iterable[Event], ledger: Ledger) -> str:
    return "".join(json.dumps(event_json(ledger, event), sort_keys=True) + "\n" for event in events)


# -- incident --------------------------------------------------------------------------------


def incident_tables(incident: Incident) -> list[Table]:
    deaths = Table("Worker deaths", ("server time", "worker", "reaped by", "jobs taken down"))
    for death in incident.worker_deaths:
        event = death.event
        jobs = "; ".join(f"{job_id}: {fate}" for job_id, fate in death.jobs) or "none"
        deaths.rows.append(
            [format_ts(event.ts_ms), _opt(event.worker), event.attributes.get("reaper", ""), jobs]
        )
    reaps = Table(
        f"Reaps ({len(incident.reaps)})", ("server time", "job", "worker", "attempt", "crashes")
    )
    for event in incident.reaps:
        reaps.rows.append([
            format_ts(event.ts_ms), _opt(event.job_id), _opt(event.worker), _opt(event.attempt),
            event.attributes.get("crashes", ""),
        ])  # fmt: skip
    retries = Table("Retries by error", ("count", "error", "tasks", "jobs"))
    for group in incident.retries:
        retries.rows.append(
            [str(group.count), group.example, _tasks(group.tasks), _ids(group.jobs)]
        )
    dead = Table("Dead letters by reason", ("count", "reason", "tasks", "jobs"))
    for group in incident.dead_letters:
        dead.rows.append([str(group.count), group.key, _tasks(group.tasks), _ids(group.jobs)])
    return [deaths, reaps, retries, dead, *_incident_more(incident)]


def _incident_more(incident: Incident) -> list[Table]:
    periods = Table("Paused periods", ("queue", "from", "to", "by"))
    for period in incident.paused:
        end = "still paused" if period.end_ms is None else format_ts(period.end_ms)
        periods.rows.append([period.queue, format_ts(period.start_ms), end, period.by])
    slowest = Table("Slowest jobs", ("job", "task", "enqueue to done", "attempts", "last run"))
    for history in incident.slowest:
        last = history.attempts[-1].run_ms(history.window_end_ms) if history.attempts else 0
        slowest.rows.append([
            history.job_id, _opt(history.task), format_duration(total_ms(history)),
            str(len(history.attempts)), format_duration(last),
        ])  # fmt: skip
    tasks = Table("Top failing tasks", ("task", "failures", "dead letters"))
    for task, failures, dead in incident.failing_tasks[:SHOWN_IDS]:
        tasks.rows.append([task, str(failures), str(dead)])
    return [periods, slowest, tasks, anomalies_table(incident.anomalies, with_job=True)]


def _tasks(tasks: Any) -> str:
    return ", ".join(f"{task} {count}" for task, count in tasks.most_common(5))


def incident_json(incident: Incident) -> dict[str, Any]:
    return {
        "since_ms": incident.since_ms,
        "until_ms": incident.until_ms,
        "queue": incident.queue,
        "events": incident.events,
        "worker_deaths": [
            {
                "event_id": d.event.event_id,
                "ts_ms": d.event.ts_ms,
                "worker": d.event.worker,
                "reaper": d.event.attributes.get("reaper"),
                "jobs": [{"job_id": job_id, "after": fate} for job_id, fate in d.jobs],
            }
            for d in incident.worker_deaths
        ],
        "reaps": [event.to_record() for event in incident.reaps],
        "retries_by_error": [_group_json(group) for group in incident.retries],
        "dead_letters_by_reason": [_group_json(group) for group in incident.dead_letters],
        "paused": [
            {"queue": p.queue, "from_ms": p.start_ms, "to_ms": p.end_ms, "by": p.by}
            for p in incident.paused
        ],
        "fallback": incident.fallback,
        "backpressure": incident.backpressure,
        "slowest": [
            {
                "queue": h.queue,
                "job_id": h.job_id,
                "task": h.task,
                "total_ms": total_ms(h),
                "attempts": len(h.attempts),
            }
            for h in incident.slowest
        ],
        "failing_tasks": [
            {"task": task, "failures": failures, "dead_letters": dead}
            for task, failures, dead in incident.failing_tasks
        ],
        "anomalies": [anomaly.to_dict() for anomaly in incident.anomalies],
    }


def _group_json(group: Any) -> dict[str, Any]:
    return {"key": group.key, "example": group.example, "count": group.count,
            "tasks": dict(group.tasks), "jobs": group.jobs}  # fmt: skip
