"""replay: rebuild what happened to jobs from the ledger, wherever it is kept.

    replay job JOB_ID --source DIR [--source redis://...] [--html FILE]
    replay incident --since -1h --until now --source ... [--queue Q] [--html FILE]
    replay state --at 2025-12-03T12:00:00Z --source ... [--queue Q]
    replay verify --redis-url redis://... --source DIR --source redis://...
    replay query --source ... [--task T] [--type T] [--where payload.customer=42] [--csv]

Sources (--source, repeatable): a local NDJSON folder, s3://bucket/prefix,
kafka://host:port/topic, redis://host:port/db (the un-shipped tail). Times are ISO 8601
(UTC when no zone is given) or relative to now: -15m, -2h, -1d.

Exit codes: 0 success; 1 when --strict finds anomalies or unreadable data, or verify finds
a divergence; 2 on bad input or a source that cannot be read, with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import redis
from redis.exceptions import RedisError

from engine.keys import QueueKeys, queues_key
from engine.logs import configure_logging
from replay import html, report
from replay import verify as verifying
from replay.errors import BadInput, JobNotFound, ReplayError, SourceUnavailable
from replay.history import JobHistory, build_history, group_by_job
from replay.incident import Incident, build_incident
from replay.merge import Ledger, load
from replay.query import Query, parse_where
from replay.render import Output, progress_bars
from replay.sources import DEFAULT_KAFKA_TIMEOUT_S, DEFAULT_NAMESPACE, ReadOptions, parse_sources
from replay.sources.redis import connect, redacted
from replay.state import QueueState, rebuild
from replay.times import format_ts, now_ms, parse_time

DEFAULT_LANES = "high,default,low"


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise `BadInput` (one line on stderr, exit 2) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


# -- shared steps ----------------------------------------------------------------------------


def _options(args: argparse.Namespace, **narrowing: Any) -> ReadOptions:
    return ReadOptions(
        queue=args.queue,
        namespace=args.namespace,
        s3_endpoint_url=args.s3_endpoint_url,
        kafka_timeout_s=args.kafka_timeout,
        **narrowing,
    )


def _load(args: argparse.Namespace, options: ReadOptions) -> Ledger:
    sources = parse_sources(args.source)
    with progress_bars() as factory:
        ledger = load(sources, options, factory)
    for line in report.problem_lines(ledger):
        print(f"replay: warning: {line}", file=sys.stderr)
    return ledger


def _finish(args: argparse.Namespace, out: Output, ledger: Ledger, *, anomalies: int = 0) -> int:
    if not args.json:
        out.table(report.sources_table(ledger))
        out.line(report.sources_summary(ledger))
    strict_failure = args.strict and (anomalies or ledger.problem_count)
    return 1 if strict_failure else 0


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _write_html(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror}"
        raise BadInput(msg) from exc
    print(f"replay: wrote {path}", file=sys.stderr)


# -- replay job ------------------------------------------------------------------------------


def cmd_job(args: argparse.Namespace) -> int:
    ledger = _load(args, _options(args, job_id=args.job_id))
    histories = _job_histories(ledger, args.job_id, args.queue)
    anomalies = sum(len(history.anomalies) for history in histories)

    if args.json:
        _print_json(
            {"jobs": [report.job_json(h, ledger) for h in histories], **report.sources_json(ledger)}
        )
    else:
        _show_jobs(Output(sys.stdout), histories, ledger)
    if args.html:
        _write_html(args.html, _job_page(histories, ledger))
    return _finish(args, Output(sys.stdout), ledger, anomalies=anomalies)


def _job_histories(ledger: Ledger, job_id: str, queue: str | None) -> list[JobHistory]:
    groups = group_by_job(ledger.events)
    keys = sorted(key for key in groups if key[1] == job_id)
    if not keys:
        where = f" in queue {queue}" if queue else ""
        msg = f"no source holds an event of job {job_id}{where}"
        raise JobNotFound(msg)
    return [build_history(q, j, groups[(q, j)], from_start=ledger.from_start) for q, j in keys]


def _show_jobs(out: Output, histories: list[JobHistory], ledger: Ledger) -> None:
    for history in histories:
        out.heading(f"Job {history.job_id} in queue {history.queue}")
        out.line(f"task {history.task or 'unknown'}; outcome: {history.outcome}")
        out.table(report.timeline_table(history, ledger))
        out.table(report.facts_table(history))
        if history.anomalies:
            out.table(report.anomalies_table(history.anomalies))
        else:
            out.line("No anomalies.")


def _job_page(histories: list[JobHistory], ledger: Ledger) -> str:
    first = histories[0]
    tables = []
    for history in histories:
        tables += [report.facts_table(history), report.anomalies_table(history.anomalies)]
        tables.append(report.timeline_table(history, ledger))
    lines = [f"queue {h.queue}: task {h.task or 'unknown'}, {h.outcome}" for h in histories]
    return html.page(f"Job {first.job_id}", lines, html.timeline_of(histories), tables)


# -- replay incident -------------------------------------------------------------------------


def cmd_incident(args: argparse.Namespace) -> int:
    now = now_ms()
    since, until = parse_time(args.since, now=now), parse_time(args.until, now=now)
    if since > until:
        msg = f"--since {args.since} is after --until {args.until}"
        raise BadInput(msg)
    ledger = _load(args, _options(args))
    incident = build_incident(ledger, since, until, queue=args.queue, top=args.top)

    if args.json:
        _print_json({**report.incident_json(incident), **report.sources_json(ledger)})
    else:
        out = Output(sys.stdout)
        out.heading(f"Incident from {format_ts(since)} to {format_ts(until)}")
        out.line(
            f"{incident.events} events in the window"
            + (f" on queue {args.queue}" if args.queue else "")
        )
        out.tables(report.incident_tables(incident))
        out.line(f"Fallback periods: {incident.fallback}.")
        out.line(f"Backpressure periods: {incident.backpressure}.")
    if args.html:
        _write_html(args.html, _incident_page(incident, ledger))
    return _finish(args, Output(sys.stdout), ledger, anomalies=len(incident.anomalies))


def _incident_page(incident: Incident, ledger: Ledger) -> str:
    deaths = [death.event for death in incident.worker_deaths]
    since, until = format_ts(incident.since_ms), format_ts(incident.until_ms)
    lines = [
        f"{incident.events} events between {since} and {until}",
        f"fallback periods: {incident.fallback}; backpressure periods: {incident.backpressure}",
    ]
    timeline = html.timeline_of(incident.histories, deaths)
    tables = [*report.incident_tables(incident), report.sources_table(ledger)]
    return html.page("Incident", lines, timeline, tables)


# -- replay state ----------------------------------------------------------------------------


def cmd_state(args: argparse.Namespace) -> int:
    at = parse_time(args.at)
    ledger = _load(args, _options(args))
    queues = rebuild(ledger.events, at_ms=at)

    if args.json:
        states = [report.state_json(queues[name]) for name in sorted(queues)]
        _print_json({"at_ms": at, "queues": states, **report.sources_json(ledger)})
        return _finish(args, Output(sys.stdout), ledger)

    out = Output(sys.stdout)
    if not queues:
        out.line(f"No events at or before {format_ts(at)}.")
    for name in sorted(queues):
        out.heading(f"Queue {name} at {format_ts(at)}")
        for line in report.state_summary(queues[name]):
            out.line(line)
        out.tables(report.state_tables(queues[name]))
    return _finish(args, out, ledger)


# -- replay verify ---------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    lanes = [lane for lane in args.lanes.split(",") if lane]
    client = connect(args.redis_url)
    try:
        found = _verify(args, client, lanes)
    except RedisError as exc:
        msg = f"cannot read {redacted(args.redis_url)}: {exc}"
        raise SourceUnavailable(msg) from exc
    finally:
        client.close()

    result, ledger = found
    if args.json:
        _print_json({**report.verify_json(result), **report.sources_json(ledger)})
    else:
        _show_verify(Output(sys.stdout), result)
    code = _finish(args, Output(sys.stdout), ledger)
    return 1 if result.divergences else code


def _verify(
    args: argparse.Namespace, client: redis.Redis, lanes: list[str]
) -> tuple[verifying.VerifyReport, Ledger]:
    namespace = args.namespace
    registered = cast(set[str], client.smembers(queues_key(namespace)))
    queues = sorted(q for q in registered if args.queue is None or q == args.queue)
    live = verifying.snapshot(client, namespace, queues, lanes)

    ledger = _load(args, _options(args))
    extra = sorted({event.queue for event in ledger.events} - set(live))
    live.update(verifying.snapshot(client, namespace, extra, lanes))
    built = verifying.ledger_state(ledger.events, live)

    result = verifying.VerifyReport(queues=sorted(live))
    for queue in sorted(live):
        mine = built.get(queue) or QueueState(queue)
        verifying.check_queue(client, QueueKeys(queue, namespace), mine, live[queue], result)
    return result, ledger


def _show_verify(out: Output, result: verifying.VerifyReport) -> None:
    out.heading("Ledger against live Redis")
    if result.divergences:
        out.table(report.verify_table(result))
        out.line(f"{len(result.divergences)} divergences.")
    else:
        out.line(f"No divergence in {len(result.queues)} queue(s).")
    out.line(
        f"{result.jobs_compared} job records compared; {result.jobs_moved_on} changed during the "
        "check and were left out."
    )


# -- replay query ----------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    now = now_ms()
    query = Query(
        queues=[args.queue] if args.queue else [], tasks=args.task, types=args.type,
        workers=args.worker, jobs=args.job,
        since_ms=parse_time(args.since, now=now) if args.since else None,
        until_ms=parse_time(args.until, now=now) if args.until else None,
        wheres=[parse_where(text) for text in args.where],
    )  # fmt: skip
    job_id = args.job[0] if len(args.job) == 1 else None
    ledger = _load(
        args, _options(args, job_id=job_id, since_ms=query.since_ms, until_ms=query.until_ms)
    )
    found = query.run(ledger.events)[: args.limit] if args.limit else query.run(ledger.events)

    if args.csv:
        sys.stdout.write(report.query_csv(found, ledger))
    elif args.json:
        sys.stdout.write(report.query_json_lines(found, ledger))
    else:
        out = Output(sys.stdout)
        out.table(report.query_table(found, ledger))
        out.line(f"{len(found)} events match.")
        return _finish(args, out, ledger)
    return 1 if args.strict and ledger.problem_count else 0


# -- the parser ------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="ADDRESS",
        help="ledger source (repeatable): folder, s3://, kafka://, redis://",
    )
    common.add_argument("--queue", help="only this queue")
    common.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="Redis key namespace")
    common.add_argument("--s3-endpoint-url", help="S3 endpoint (default: boto3's settings)")
    common.add_argument(
        "--kafka-timeout",
        type=float,
        default=DEFAULT_KAFKA_TIMEOUT_S,
        metavar="SECONDS",
        help="give up reading a topic after this long",
    )
    common.add_argument(
        "--json", action="store_true", help="JSON for machines (query: one object per line)"
    )
    common.add_argument(
        "--strict", action="store_true", help="exit 1 when anomalies or unreadable data are found"
    )
    return common  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _common()
    _command(sub, common, "job", "one job's timeline, facts and anomalies", cmd_job)
    _command(sub, common, "incident", "what happened in a time window", cmd_incident)
    _command(sub, common, "state", "queues rebuilt from events at a time", cmd_state)
    _command(sub, common, "verify", "compare the rebuilt state with live Redis", cmd_verify)
    _command(sub, common, "query", "filter events; table, JSON lines or CSV", cmd_query)
    return parser


_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def _command(
    sub: Any,
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
) -> None:
    parser = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
    _ARGUMENTS[name](parser)
    parser.set_defaults(handler=handler)


def _job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained page")


def _incident_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", required=True, help="window start: ISO 8601 or -2h")
    p.add_argument("--until", default="now", help="window end (default now)")
    p.add_argument("--top", type=int, default=10, help="how many slowest jobs to list")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained page")


def _state_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", default="now", help="the moment to rebuild (default now)")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", required=True, help="the live Redis to compare with")
    p.add_argument("--lanes", default=DEFAULT_LANES, help=f"lane names (default {DEFAULT_LANES})")


def _query_arguments(p: argparse.ArgumentParser) -> None:
    for flag, what in (("--task", "task"), ("--type", "event type"), ("--worker", "worker"),
                       ("--job", "job id")):  # fmt: skip
        p.add_argument(flag, action="append", default=[], help=f"only this {what} (repeatable)")
    p.add_argument("--since", help="from this time: ISO 8601 or -15m")
    p.add_argument("--until", help="up to this time")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="payload.field=value, attrs.key=value or field=value (repeatable)",
    )
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.add_argument("--limit", type=int, default=0, help="at most this many events")


_ARGUMENTS.update(
    job=_job_arguments, incident=_incident_arguments, state=_state_arguments,
    verify=_verify_arguments, query=_query_arguments,
)  # fmt: skip


TIME_OPTIONS = frozenset({"--since", "--until", "--at"})
_RELATIVE_TIME = re.compile(r"-\d")


def _glued_times(argv: Sequence[str]) -> list[str]:
    """`--since -15m` as `--since=-15m`: argparse would take `-15m` for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in TIME_OPTIONS and _RELATIVE_TIME.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("ERROR")  # sources' own warnings would repeat what replay reports
    try:
        args = build_parser().parse_args(_glued_times(sys.argv[1:] if argv is None else argv))
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (BadInput, SourceUnavailable, JobNotFound) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
