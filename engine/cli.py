"""The `jobqueue` command: enqueue, worker, stats, pause/resume, dlq, workers, peek, purge,
top, demo.

Errors go to stderr as one line; exit code 2 means bad input or configuration, 1 an
operation the queue refused (full, backpressure, unknown job).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from engine import admin
from engine.app import App
from engine.errors import ConfigError, EngineError, InvalidName, InvalidPayload
from engine.jobs import parse_payload
from engine.logs import configure_logging
from engine.queue import JobQueue, QueueStats
from engine.settings import Settings, load_settings
from ledger.cli import add_ledger_commands
from sinks.base import SinkError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """'250ms', '30s', '5m', '2h', '1d' or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match:
        msg = f"cannot read {text!r} as a duration: use e.g. 250ms, 30s, 5m, 2h"
        raise argparse.ArgumentTypeError(msg)
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"cannot read {text!r} as a time: use ISO 8601, e.g. 2026-12-24T10:00:00Z"
        raise argparse.ArgumentTypeError(msg) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_app(spec: str) -> App:
    """`module` (its `app` attribute) or `module:attribute`."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import the app module {module_name!r}: {exc}"
        raise ConfigError(msg) from exc
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        msg = f"{spec!r} does not name an engine.App (define `app = App()` in the module)"
        raise ConfigError(msg)
    return app


# -- commands -------------------------------------------------------------------------


async def _with_queue(settings: Settings, work: Callable[[JobQueue], Awaitable[int]]) -> int:
    jq = await JobQueue.connect(settings)
    try:
        return await work(jq)
    finally:
        await jq.close()


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    payload = parse_payload(args.payload, what="--payload")

    async def work(jq: JobQueue) -> int:
        job_id = await jq.enqueue(
            args.queue,
            args.task,
            payload,
            lane=args.lane,
            job_id=args.job_id,
            max_attempts=args.max_attempts,
            delay_s=args.delay,
            due_at=args.at,
            trace_id=args.trace_id,
            wait_s=args.wait or 0.0,
        )
        print(job_id)
        return 0

    return asyncio.run(_with_queue(settings, work))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from engine.worker import run_worker  # noqa: PLC0415 - only workers need it

    app = load_app(args.app)
    asyncio.run(run_worker(app, args.queues, settings))
    return 0


def _stats_text(stats: QueueStats) -> str:
    lanes = "  ".join(f"{lane}={n}" for lane, n in stats.lanes.items())
    lines = [
        f"{stats.queue}{'  (paused)' if stats.paused else ''}",
        f"  ready      {stats.ready}  ({lanes})",
        f"  scheduled  {stats.scheduled}",
        f"  in flight  {sum(stats.in_flight.values())}",
    ]
    lines += [f"    {worker}  {n}" for worker, n in stats.in_flight.items()]
    lines += [f"  dead       {stats.dead}", f"  outbox     {stats.outbox} un-shipped events"]
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    async def work(jq: JobQueue) -> int:
        names = [args.queue] if args.queue else await jq.queues()
        all_stats = [await jq.stats(name) for name in names]
        if args.json:
            print(json.dumps([_stats_dict(s) for s in all_stats], indent=2))
        elif not all_stats:
            print("no queues yet")
        else:
            print("\n".join(_stats_text(s) for s in all_stats))
        return 0

    return asyncio.run(_with_queue(settings, work))


def _stats_dict(stats: QueueStats) -> dict[str, Any]:
    return {
        "queue": stats.queue,
        "paused": stats.paused,
        "lanes": stats.lanes,
        "ready": stats.ready,
        "scheduled": stats.scheduled,
        "in_flight": stats.in_flight,
        "dead": stats.dead,
        "outbox": stats.outbox,
    }


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    async def work(jq: JobQueue) -> int:
        pause = args.command == "pause"
        changed = await (jq.pause(args.queue) if pause else jq.resume(args.queue))
        state = "paused" if pause else "running"
        if args.json:
            print(json.dumps({"queue": args.queue, "paused": pause, "changed": changed}))
            return 0
        print(f"{args.queue}: {state}" + ("" if changed else " (no change)"))
        return 0

    return asyncio.run(_with_queue(settings, work))


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    handlers: dict[str, Callable[[JobQueue], Awaitable[int]]] = {
        "list": lambda jq: _dlq_list(jq, args),
        "show": lambda jq: _dlq_show(jq, args),
        "requeue": lambda jq: _dlq_change(jq, args, "requeue"),
        "purge": lambda jq: _dlq_change(jq, args, "purge"),
    }
    return asyncio.run(_with_queue(settings, handlers[args.dlq_command]))


async def _dlq_list(jq: JobQueue, args: argparse.Namespace) -> int:
    letters = await jq.dead_letters(args.queue, limit=args.limit, task=args.task)
    if args.json:
        for record in letters:
            print(json.dumps(_dead_letter(record)))
        return 0
    if not letters:
        print(f"{args.queue}: no dead letters")
    for record in letters:
        error = (record.get("last_error") or "").splitlines()[0:1]
        print(
            f"{record['id']}  {record['task']}  {record.get('dead_reason', '?')}  "
            f"attempts={record.get('attempts')} crashes={record.get('crashes')}  "
            f"{error[0] if error else ''}"
        )
    return 0


def _dead_letter(record: dict[str, str]) -> dict[str, Any]:
    keep = ("id", "task", "lane", "dead_reason", "last_error", "attempts", "failures",
            "crashes", "created_ms", "dead_ms", "payload", "traceback")  # fmt: skip
    return {k: record[k] for k in keep if k in record}


async def _dlq_show(jq: JobQueue, args: argparse.Namespace) -> int:
    record = await jq.job(args.queue, args.job_id)
    print(json.dumps(_dead_letter(record) if record.get("state") == "dead" else record, indent=2))
    return 0


async def _dlq_change(jq: JobQueue, args: argparse.Namespace, action: str) -> int:
    if not args.all and not args.job_ids:
        msg = f"dlq {action} needs job ids or --all"
        raise ConfigError(msg)
    if action == "purge" and not args.yes:
        msg = "dlq purge deletes jobs for good: add --yes to confirm"
        raise ConfigError(msg)
    change = jq.requeue_dead if action == "requeue" else jq.purge_dead
    done, missing = await change(args.queue, args.job_ids, all_=args.all)
    verb = "requeued" if action == "requeue" else "purged"
    print(f"{args.queue}: {done} {verb}")
    for job_id in missing:
        print(f"not a dead letter in {args.queue}: {job_id}", file=sys.stderr)
    return 1 if missing else 0


# -- admin: workers, peek, purge, top (the logic is in engine/admin.py, engine/tui.py) --


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    async def work(jq: JobQueue) -> int:
        names = [args.queue] if args.queue else await jq.queues()
        views = [view for name in names for view in await admin.workers(jq, name)]
        print(admin.to_json(views) if args.json else admin.workers_text(views))
        return 0

    return asyncio.run(_with_queue(settings, work))


def cmd_peek(args: argparse.Namespace, settings: Settings) -> int:
    async def work(jq: JobQueue) -> int:
        jobs = await admin.peek(jq, args.queue, lane=args.lane, count=args.n)
        print(admin.to_json(jobs) if args.json else admin.peek_text(jobs))
        return 0

    return asyncio.run(_with_queue(settings, work))


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        msg = (
            f"purge deletes every ready job of lane {args.lane!r} of queue {args.queue!r} "
            "for good: add --yes to confirm"
        )
        raise ConfigError(msg)

    async def work(jq: JobQueue) -> int:
        by = args.by or admin.operator_name()
        result = await admin.purge_lane(jq, args.queue, args.lane, by=by)
        print(admin.to_json(result) if args.json else admin.purge_text(result))
        return 0

    return asyncio.run(_with_queue(settings, work))


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    from engine.tui import run_top  # noqa: PLC0415 - textual loads for the dashboard only

    return asyncio.run(run_top(settings, args.queues, interval_s=args.interval))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import run_demo  # noqa: PLC0415 - the demo pulls in more

    return run_demo(args)


# -- parser -----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--redis-url", help="redis:// or rediss:// URL (JOBQUEUE_REDIS_URL)")
    parser.add_argument("--namespace", help="key namespace (default jobqueue)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobqueue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enqueue", help="enqueue one job and print its id")
    _common(p)
    p.add_argument("queue")
    p.add_argument("task")
    p.add_argument("--payload", default="{}", help="JSON payload (default {})")
    p.add_argument("--lane", help="priority lane (default: the default lane)")
    p.add_argument("--job-id", help="explicit job id; an existing one is refused")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--trace-id")
    p.add_argument("--wait", type=parse_duration_s, help="wait this long for room when full")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=parse_duration_s, help="run after e.g. 30s, 5m")
    when.add_argument("--at", type=parse_time, help="run at an ISO 8601 time")
    p.set_defaults(handler=cmd_enqueue)

    p = sub.add_parser("worker", help="run handlers for one or more queues")
    _common(p)
    p.add_argument("queues", nargs="+")
    p.add_argument("--app", required=True, help="module (or module:attr) defining an App")
    p.add_argument("--concurrency", type=int)
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("stats", help="lane lengths, in flight, dead letters, outbox")
    _common(p)
    p.add_argument("queue", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_stats)

    for name in ("pause", "resume"):
        p = sub.add_parser(name, help=f"{name} handing out claims on a queue")
        _common(p)
        p.add_argument("queue")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_pause)

    _dlq_parser(sub)
    _admin_parsers(sub)
    add_ledger_commands(sub, _common)

    p = sub.add_parser("demo", help="an end-to-end run on a private redis-server")
    _common(p)
    p.add_argument("--jobs", type=int, default=3000, help="ordinary jobs to enqueue")
    # The live display says what the logs would; keep them for real trouble.
    p.set_defaults(handler=cmd_demo, log_level="ERROR")
    return parser


def _dlq_parser(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list, show, requeue or purge dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True)
    p = dsub.add_parser("list")
    _common(p)
    p.add_argument("queue")
    p.add_argument("--task")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p = dsub.add_parser("show")
    _common(p)
    p.add_argument("queue")
    p.add_argument("job_id")
    for name in ("requeue", "purge"):
        p = dsub.add_parser(name)
        _common(p)
        p.add_argument("queue")
        p.add_argument("job_ids", nargs="*")
        p.add_argument("--all", action="store_true")
        if name == "purge":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")
    dlq.set_defaults(handler=cmd_dlq)


def _admin_parsers(sub: Any) -> None:
    p = sub.add_parser("workers", help="registered workers: heartbeat age, jobs in flight")
    _common(p)
    p.add_argument("queue", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_workers)

    p = sub.add_parser("peek", help="the next ready jobs of a lane")
    _common(p)
    p.add_argument("queue")
    p.add_argument("--lane", help="priority lane (default: the default lane)")
    p.add_argument("-n", type=int, default=10, help="how many jobs (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_peek)

    p = sub.add_parser("purge", help="delete every ready job of a lane, an event for each")
    _common(p)
    p.add_argument("queue")
    p.add_argument("--lane", required=True)
    p.add_argument("--by", help="who asked, for the events (default: user@host)")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_purge)

    p = sub.add_parser("top", help="a live dashboard: queues, workers, dead letters, ledger")
    _common(p)
    p.add_argument("queues", nargs="*", help="queues to show (default: every queue)")
    p.add_argument("--interval", type=parse_duration_s, default=2.0, help="refresh period")
    p.set_defaults(handler=cmd_top)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        redis_url=args.redis_url,
        namespace=args.namespace,
        concurrency=getattr(args, "concurrency", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.handler(args, _settings(args)))
    except (ConfigError, InvalidName, InvalidPayload) as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 1
    except SinkError as exc:
        print(f"jobqueue: ledger sink failed: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"jobqueue: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
