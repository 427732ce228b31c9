"""`jobqueue demo`: the whole product in under a minute, on a private redis-server.

Producers enqueue a few thousand jobs across the three lanes, some delayed; three worker
processes handle them. The demo kills the worker running a slow report with SIGKILL (its
job is reaped and finished elsewhere), a flaky task succeeds after retries, a poison job
ends in the dead-letter queue, and the ledger's primary sink is turned off for a while
so the fallback and then the drain are visible. It ends with `replay` autopsies, an
incident summary and `replay verify`, stops everything it started, and exits 0 only when
all of that happened as designed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from engine.embedded import EmbeddedRedis
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings, load_settings
from ledger.event import JobEvent
from ledger.shipper import Shipper
from sinks.base import Sink, SinkUnavailable
from sinks.breaker import CircuitBreaker
from sinks.fallback import FallbackSink, drain
from sinks.ndjson import NdjsonSink
from sinks.scrub import Scrubber

QUEUE = "demo"
WORKERS = 3
OUTAGE_S = 3.0
DEADLINE_S = 45.0


class SwitchableSink(Sink):
    """The demo's primary sink: NDJSON that the demo can turn off, like an S3 endpoint
    that goes away. While off, every write raises `SinkUnavailable` at once."""

    name = "primary"

    def __init__(self, inner: NdjsonSink) -> None:
        self.inner = inner
        self.enabled = True

    async def write(self, batch: Sequence[JobEvent]) -> None:
        if not self.enabled:
            msg = "primary sink switched off by the demo"
            raise SinkUnavailable(msg)
        await self.inner.write(batch)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Scenario:
    """What the demo did and saw, for the live display and the final verdict."""

    started: float = field(default_factory=time.monotonic)
    total: int = 0
    report_job: str = ""
    flaky_job: str = ""
    poison_job: str = ""
    killed_worker: str = ""
    outage: str = "not yet"
    outage_started: float = 0.0
    drained_events: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(f"{time.monotonic() - self.started:5.1f}s  {text}")


class Demo:
    """Runs the scenario in a temporary folder."""

    def __init__(self, folder: Path, jobs: int, console: Console) -> None:
        self.folder = folder
        self.jobs = jobs
        self.console = console
        self.server = EmbeddedRedis.default(folder / "redis")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.scenario = Scenario()
        self.primary_folder = folder / "ledger" / "primary"
        self.fallback_folder = folder / "ledger" / "fallback"

    # -- set-up -------------------------------------------------------------------------

    def settings(self) -> Settings:
        return load_settings(
            redis_url=self.server.url, heartbeat_ttl_ms=1500, heartbeat_interval_ms=500,
            idle_block_s=0.5, ledger_ship_in_worker=False,
        )  # fmt: skip

    def start_worker(self) -> None:
        env = {
            **os.environ,
            "JOBQUEUE_REDIS_URL": self.server.url,
            "JOBQUEUE_HEARTBEAT_TTL_MS": "1500",
            "JOBQUEUE_HEARTBEAT_INTERVAL_MS": "500",
            "JOBQUEUE_LEDGER_SHIP_IN_WORKER": "false",
            "JOBQUEUE_CONCURRENCY": "16",
        }
        log = (self.folder / f"worker-{len(self.workers)}.log").open("wb")
        command = [sys.executable, "-m", "engine.cli", "worker", QUEUE,
                   "--app", "engine.demo_app", "--log-level", "WARNING"]  # fmt: skip
        self.workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        log.close()

    async def enqueue(self, jq: JobQueue) -> None:
        lanes = ("high", "default", "low")
        specs = [JobSpec("resize_image", {"image": i}, lane=lanes[i % 3]) for i in range(self.jobs)]
        specs += [JobSpec("resize_image", {"image": f"later-{i}"}, delay_s=1 + i % 3)
                  for i in range(self.jobs // 15)]  # fmt: skip
        for start in range(0, len(specs), 500):
            await jq.enqueue_many(QUEUE, specs[start : start + 500])
        s = self.scenario
        s.report_job = await jq.enqueue(QUEUE, "render_report", {"seconds": 2.5}, lane="low")
        s.flaky_job = await jq.enqueue(QUEUE, "send_email", {"to": "ada@example.com"})
        s.poison_job = await jq.enqueue(QUEUE, "parse_invoice", {"invoice": "INV-0042"})
        s.total = len(specs) + 3
        s.note(f"enqueued {s.total} jobs over 3 lanes ({self.jobs // 15} delayed)")

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> int:
        self.server.start()
        try:
            return await self._run()
        finally:
            self.stop_workers()
            self.server.stop()

    async def _run(self) -> int:
        settings = self.settings()
        jq = await JobQueue.connect(settings)
        primary = SwitchableSink(NdjsonSink(self.primary_folder))
        fallback = NdjsonSink(self.fallback_folder)
        breaker = CircuitBreaker("primary", failure_threshold=1, reset_timeout_s=0.5,
                                 probe_timeout_s=2.0)  # fmt: skip
        sink = FallbackSink(primary, fallback, breaker=breaker)
        shipper = Shipper(jq.redis, settings, sink, Scrubber(), [QUEUE], consumer="demo")
        self.console.print(f"[bold]jobqueue demo[/] redis-server {self.server.binary} "
                           f"on 127.0.0.1:{self.server.port}, ledger in {self.folder}")  # fmt: skip
        await self.enqueue(jq)
        for _ in range(WORKERS):
            self.start_worker()
        shipping = asyncio.create_task(shipper.run())
        try:
            await self.watch(jq, primary, sink)
        finally:
            self.stop_workers()
            shipper.stop()
            await shipping
            await shipper.flush(timeout_s=5.0)
        await self.drain(primary, fallback)
        await primary.close()
        await fallback.close()
        self.console.print()
        verdict = await self.autopsy(jq)
        await jq.close()
        return verdict

    async def watch(self, jq: JobQueue, primary: SwitchableSink, sink: FallbackSink) -> None:
        live_display = sys.stdout.isatty()
        with Live(console=self.console, refresh_per_second=8, transient=False) as live:
            last_print = 0.0
            while True:
                await self.step(jq, primary, sink)
                table = await self.status(jq, sink)
                if live_display:
                    live.update(table)
                elif time.monotonic() - last_print > 2:
                    live.console.print(table)
                    last_print = time.monotonic()
                if await self.finished(jq):
                    live.update(table)
                    return
                if time.monotonic() - self.scenario.started > DEADLINE_S:
                    self.scenario.note("deadline reached before the queue drained")
                    return
                await asyncio.sleep(0.1)

    async def step(self, jq: JobQueue, primary: SwitchableSink, sink: FallbackSink) -> None:
        """The scripted trouble: one worker killed mid-job, one sink outage while work
        flows (it starts once workers have claimed, and lasts until the fallback took
        events and OUTAGE_S passed, however slowly the machine runs)."""
        s = self.scenario
        if not s.killed_worker:
            await self.kill_report_worker(jq)
        if s.outage == "not yet" and any((await jq.stats(QUEUE)).in_flight.values()):
            primary.enabled = False
            s.outage = "primary down"
            s.outage_started = time.monotonic()
            s.note("primary sink switched off: the shipper writes to the NDJSON fallback")
        elif (
            s.outage == "primary down"
            and time.monotonic() - s.outage_started > OUTAGE_S
            and sink.events_to_fallback > 0
        ):
            primary.enabled = True
            s.outage = "primary back"
            s.note(f"primary sink back after {OUTAGE_S:.0f}s "
                   f"({sink.events_to_fallback} events went to the fallback)")  # fmt: skip

    async def kill_report_worker(self, jq: JobQueue) -> None:
        s = self.scenario
        key = jq.keys(QUEUE).job(s.report_job)
        state, worker = await jq.redis.hmget(key, "state", "worker")
        if state != "active" or not worker:
            return
        worker_id = str(worker)
        for index, process in enumerate(self.workers):
            if f"-{process.pid}-" in worker_id and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                s.killed_worker = worker_id
                s.note(f"SIGKILL to worker {worker_id} while it ran render_report "
                       f"{s.report_job}; starting a replacement")  # fmt: skip
                self.workers[index] = self.workers[-1]
                self.workers.pop()
                self.start_worker()
                return

    async def finished(self, jq: JobQueue) -> bool:
        stats = await jq.stats(QUEUE)
        busy = stats.ready + stats.scheduled + sum(stats.in_flight.values())
        return busy == 0 and stats.dead >= 1 and self.scenario.outage == "primary back"

    async def status(self, jq: JobQueue, sink: FallbackSink) -> Table:
        stats = await jq.stats(QUEUE)
        s = self.scenario
        left = stats.ready + stats.scheduled + sum(stats.in_flight.values())
        table = Table(title=f"queue {QUEUE}: {s.total - left - stats.dead}/{s.total} done",
                      show_header=False, min_width=70)  # fmt: skip
        lanes = "  ".join(f"{lane} {n}" for lane, n in stats.lanes.items())
        table.add_row("ready", lanes)
        table.add_row("scheduled", str(stats.scheduled))
        table.add_row("in flight", "  ".join(f"{w[-6:]}:{n}" for w, n in stats.in_flight.items()))
        table.add_row("dead letters", str(stats.dead))
        table.add_row("outbox", f"{stats.outbox} un-shipped events")
        table.add_row("ledger", f"{s.outage}; {sink.events_to_primary} to primary, "
                                f"{sink.events_to_fallback} to fallback")  # fmt: skip
        for note in s.notes[-6:]:
            table.add_row("", note)
        return table

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()

    async def drain(self, primary: SwitchableSink, fallback: NdjsonSink) -> None:
        report = await drain(self.fallback_folder, primary, live=fallback)
        self.scenario.drained_events = report.events
        self.scenario.note(f"drained {report.events} fallback events in {report.segments} "
                           "segments to the primary")  # fmt: skip

    # -- the autopsy --------------------------------------------------------------------

    async def autopsy(self, jq: JobQueue) -> int:
        from replay.cli import main as replay  # noqa: PLC0415 - the demo's last act

        s = self.scenario
        sources = ["--source", str(self.primary_folder), "--source", self.server.url]
        self.console.rule("what happened")
        for note in s.notes:
            self.console.print(f"  {note}")
        runs = {}
        for title, argv in (
            ("the killed worker's job", ["job", s.report_job, *sources]),
            ("the poison job", ["job", s.poison_job, *sources]),
            ("the run as an incident", ["incident", "--since", "-10m", *sources]),
            ("the ledger against live Redis", ["verify", "--redis-url", self.server.url,
                                               *sources]),
        ):  # fmt: skip
            self.console.rule(f"replay: {title}")
            self.console.print(f"$ replay {' '.join(argv)}", style="dim")
            runs[title] = await asyncio.to_thread(replay, argv)
        return await self.verdict(jq, runs)

    async def verdict(self, jq: JobQueue, runs: dict[str, int]) -> int:
        s = self.scenario
        report = await jq.job(QUEUE, s.report_job)
        flaky = await jq.job(QUEUE, s.flaky_job)
        poison = await jq.job(QUEUE, s.poison_job)
        checks = {
            "a worker was killed mid-job": bool(s.killed_worker),
            "its job was reaped and finished elsewhere": report.get("state") == "done"
            and report.get("crashes") == "1",
            "the flaky task succeeded after retries": flaky.get("state") == "done"
            and int(flaky.get("failures", 0)) >= 2,
            "the poison job is a dead letter": poison.get("state") == "dead",
            "the fallback took events and was drained": s.drained_events > 0,
            "replay verify agrees with Redis": runs.get("the ledger against live Redis") == 0,
        }
        self.console.rule("verdict")
        for name, ok in checks.items():
            self.console.print(f"  {'ok ' if ok else 'FAILED'}  {name}")
        return 0 if all(checks.values()) else 1


def run_demo(args: argparse.Namespace) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as folder:
        return asyncio.run(Demo(Path(folder), args.jobs, console).run())
