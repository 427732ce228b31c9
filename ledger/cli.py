"""Ledger commands: `ship` runs a standalone shipper, `ledger drain` re-ships a fallback folder.

engine.cli adds them to `jobqueue` with `add_ledger_commands`.

    jobqueue ship [QUEUE...] --sink kafka --bootstrap HOST:PORT --topic T --fallback DIR
    jobqueue ledger drain --folder DIR --sink kafka --bootstrap HOST:PORT --topic T

Every event is scrubbed before it leaves the process; there is no option to turn it off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from engine.connection import check_server, create_redis
from engine.errors import ConfigError
from engine.health import serve_shipper
from engine.settings import Settings
from ledger.shipper import DEFAULT_BATCH_SIZE, DEFAULT_CLAIM_IDLE_MS, Shipper
from sinks.base import DEFAULT_WRITE_TIMEOUT_S, Sink, SinkError
from sinks.fallback import DEFAULT_DRAIN_BATCH_SIZE, DrainReport, FallbackSink, drain
from sinks.ndjson import NdjsonSink
from sinks.scrub import Scrubber

SINK_KINDS: Final = ("ndjson", "kafka", "s3")
DEFAULT_TOPIC: Final = "jobqueue-ledger"
DEFAULT_PREFIX: Final = "ledger"

log = structlog.get_logger("jobqueue.ledger")

Common = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """Which sink to build and where it writes, as given on the command line."""

    kind: str
    folder: Path | None = None
    bootstrap: str | None = None
    topic: str = DEFAULT_TOPIC
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    endpoint: str | None = None
    region: str | None = None
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SinkSpec:
        return cls(
            kind=args.sink,
            folder=args.sink_folder,
            bootstrap=args.bootstrap,
            topic=args.topic,
            bucket=args.bucket,
            prefix=args.prefix,
            endpoint=args.endpoint,
            region=args.region,
            write_timeout_s=args.write_timeout,
        )


def build_sink(spec: SinkSpec, *, fallback: Path | None = None) -> Sink:
    """The sink `spec` names; with `fallback`, behind a FallbackSink writing NDJSON there."""
    primary = _primary(spec)
    if fallback is None:
        return primary
    if spec.kind == "ndjson" and spec.folder is not None and _same(spec.folder, fallback):
        msg = f"the fallback folder {fallback} is the primary's folder: give another one"
        raise ConfigError(msg)
    return FallbackSink(primary, NdjsonSink(fallback, name="fallback"))


def _same(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def _primary(spec: SinkSpec) -> Sink:
    if spec.kind == "ndjson":
        if spec.folder is None:
            msg = "--sink ndjson needs a folder to write to"
            raise ConfigError(msg)
        return NdjsonSink(spec.folder, write_timeout_s=spec.write_timeout_s)
    if spec.kind == "kafka":
        return _kafka(spec)
    if spec.kind == "s3":
        return _s3(spec)
    msg = f"unknown sink {spec.kind!r}: use one of {', '.join(SINK_KINDS)}"
    raise ConfigError(msg)


def _kafka(spec: SinkSpec) -> Sink:
    from sinks.kafka import KafkaSink, KafkaSinkSettings  # noqa: PLC0415 - only Kafka users

    if not spec.bootstrap:
        msg = "--sink kafka needs --bootstrap HOST:PORT[,HOST:PORT...]"
        raise ConfigError(msg)
    settings = KafkaSinkSettings(
        bootstrap_servers=spec.bootstrap, topic=spec.topic, write_timeout_s=spec.write_timeout_s
    )
    return KafkaSink(settings)


def _s3(spec: SinkSpec) -> Sink:
    from sinks.s3 import S3Sink, S3SinkSettings  # noqa: PLC0415 - boto3 loads slowly

    if not spec.bucket:
        msg = "--sink s3 needs --bucket"
        raise ConfigError(msg)
    try:
        settings = S3SinkSettings(
            bucket=spec.bucket,
            prefix=spec.prefix,
            endpoint_url=spec.endpoint,
            region_name=spec.region,
            write_timeout_s=spec.write_timeout_s,
        )
    except SinkError as exc:
        raise ConfigError(str(exc)) from exc
    return S3Sink(settings)


def default_consumer() -> str:
    """A consumer name for one shipper process; give a fixed one to resume after a restart."""
    return f"shipper-{socket.gethostname()}-{os.getpid()}"


# -- ship ------------------------------------------------------------------------------


def cmd_ship(args: argparse.Namespace, settings: Settings) -> int:
    sink = build_sink(SinkSpec.from_args(args), fallback=args.fallback)
    asyncio.run(_ship(args, settings, sink))
    return 0


async def _ship(args: argparse.Namespace, settings: Settings, sink: Sink) -> None:
    redis = create_redis(settings)
    try:
        await check_server(redis, settings)
        shipper = Shipper(
            redis,
            settings,
            sink,
            Scrubber(),
            args.queues or None,
            consumer=args.consumer or default_consumer(),
            batch_size=args.batch_size,
            claim_idle_ms=args.claim_idle_ms,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shipper.stop)
        async with serve_shipper(shipper):
            await shipper.run()
    finally:
        await _close(sink)
        await redis.aclose()


# -- drain -----------------------------------------------------------------------------


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    folder: Path = args.folder
    if not folder.is_dir():
        msg = f"{folder} is not a folder: nothing to drain"
        raise ConfigError(msg)
    primary = build_sink(SinkSpec.from_args(args))
    report = asyncio.run(_drain(folder, primary, args.batch_size))
    print(f"{folder}: {report.segments} segments, {report.events} events re-shipped")
    for problem in report.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    for error in report.errors:
        print(f"not drained: {error}", file=sys.stderr)
    return 0 if report.complete else 1


async def _drain(folder: Path, primary: Sink, batch_size: int) -> DrainReport:
    # Holding the folder as its sink lets the live segment be rotated and drained too;
    # while a shipper writes the folder this is refused and only rotated segments go.
    live = NdjsonSink(folder, name="fallback")
    try:
        return await drain(folder, primary, batch_size=batch_size, live=live)
    finally:
        await _close(live)
        await _close(primary)


async def _close(sink: Sink) -> None:
    try:
        await sink.close()
    except SinkError as exc:
        log.warning(
            "sink_close_failed",
            sink=sink.name,
            error=str(exc),
            next="exiting anyway: every batch reported shipped was confirmed durable before",
        )


# -- parser ----------------------------------------------------------------------------


def _sink_options(parser: argparse.ArgumentParser, *, folder_flag: str) -> None:
    group = parser.add_argument_group("sink")
    group.add_argument("--sink", choices=SINK_KINDS, required=True, help="where events go")
    group.add_argument(
        folder_flag, dest="sink_folder", type=Path, help="ndjson: the folder to write"
    )
    group.add_argument("--bootstrap", help="kafka: bootstrap servers, HOST:PORT[,...]")
    group.add_argument("--topic", default=DEFAULT_TOPIC, help=f"kafka: topic ({DEFAULT_TOPIC})")
    group.add_argument("--bucket", help="s3: bucket")
    group.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"s3: key prefix ({DEFAULT_PREFIX})"
    )
    group.add_argument("--endpoint", help="s3: endpoint URL (default: AWS)")
    group.add_argument("--region", help="s3: region (default: from the AWS configuration)")
    group.add_argument(
        "--write-timeout",
        type=float,
        default=DEFAULT_WRITE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"a write not confirmed by then counts as failed ({DEFAULT_WRITE_TIMEOUT_S:g})",
    )


def _ship_parser(subparsers: Any, common: Common) -> None:
    p = subparsers.add_parser("ship", help="ship outbox events to a sink (a standalone shipper)")
    common(p)
    p.add_argument(
        "queues", nargs="*", metavar="QUEUE", help="queues to ship (default: every known queue)"
    )
    _sink_options(p, folder_flag="--folder")
    p.add_argument(
        "--fallback",
        type=Path,
        metavar="FOLDER",
        help="write NDJSON here while the sink fails; re-ship later with `ledger drain`",
    )
    p.add_argument(
        "--consumer",
        help="this shipper's name in the consumer group; keep it across restarts to re-send "
        "what it held at once (default: host and pid)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--claim-idle-ms",
        type=int,
        default=DEFAULT_CLAIM_IDLE_MS,
        help="take over events another shipper has held this long",
    )
    p.set_defaults(handler=cmd_ship)


def _ledger_parser(subparsers: Any, common: Common) -> None:
    ledger = subparsers.add_parser("ledger", help="operate the local ledger")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)
    p = lsub.add_parser("drain", help="re-ship a fallback folder's segments to a sink")
    common(p)
    p.add_argument("--folder", type=Path, required=True, help="the fallback folder")
    _sink_options(p, folder_flag="--to-folder")
    p.add_argument("--batch-size", type=int, default=DEFAULT_DRAIN_BATCH_SIZE)
    p.set_defaults(handler=cmd_drain)


def add_ledger_commands(subparsers: Any, common: Common) -> None:
    """Add `ship` and `ledger drain`; `common` adds the connection and logging options."""
    _ship_parser(subparsers, common)
    _ledger_parser(subparsers, common)


# -- standalone ------------------------------------------------------------------------
