"""Reads the Avro container files the S3 sink wrote under a prefix.

Keys look like `<prefix>/queue=<q>/date=YYYY-MM-DD/hour=HH/<first>_<last>.avro`, and every
event of an object falls in its hour, so a queue or a time window skips whole objects
without reading them. Credentials, region and endpoint come from boto3's usual settings
(environment, config files, instance roles); `--s3-endpoint-url` overrides the endpoint.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from replay.errors import SourceUnavailable
from replay.events import Event, from_job_event
from replay.sources.base import Problem, Progress, ReadOptions, Source
from sinks.s3 import HOUR_MS, DamagedObject, S3Reader

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_PARTITION: Final = re.compile(r"(?:^|/)queue=([^/]+)/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


class S3Source(Source):
    """Every `.avro` object under `s3://bucket/prefix`."""

    kind = "s3"

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        super().__init__(f"s3://{bucket}/{self.prefix}")

    def read(self, options: ReadOptions, progress: Progress) -> Iterator[list[Event]]:
        reader = S3Reader(self._client(options))
        keys = [key for key in self._list(reader) if may_hold(key, options)]
        progress.start(f"reading {self.address}", len(keys))
        for key in keys:
            yield self._read_object(reader, key)
            progress.advance(1)

    def _client(self, options: ReadOptions) -> S3Client:
        try:
            return boto3.client("s3", endpoint_url=options.s3_endpoint_url)
        except BotoCoreError as exc:
            msg = f"cannot make an S3 client for {self.address}: {exc}"
            raise SourceUnavailable(msg) from exc

    def _list(self, reader: S3Reader) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            return [
                key for key in reader.list_objects(self.bucket, prefix) if key.endswith(".avro")
            ]
        except (BotoCoreError, ClientError) as exc:
            msg = f"cannot list {self.address}: {exc}"
            raise SourceUnavailable(msg) from exc

    def _read_object(self, reader: S3Reader, key: str) -> list[Event]:
        try:
            found, damage = reader.read_object(self.bucket, key)
        except (BotoCoreError, ClientError) as exc:
            where = f"s3://{self.bucket}/{key}"
            self.report.add(Problem("unreadable_object", where, str(exc)))
            return []

        if damage is not None:
            self.report.add(self._damage(damage))
        return [from_job_event(event) for event in found]

    def _damage(self, damage: DamagedObject) -> Problem:
        kind = "unknown_schema" if damage.error.startswith("UnknownSchema") else "damaged_object"
        reason = f"damaged after {damage.events_read} events: {damage.error}"
        return Problem(kind, f"s3://{self.bucket}/{damage.key}", reason)


def may_hold(key: str, options: ReadOptions) -> bool:
    """False when the key's partition shows it holds nothing the options ask for."""
    match = _PARTITION.search(key)
    if match is None:
        return True
    queue = urllib.parse.unquote(match[1])
    if options.queue is not None and queue != options.queue:
        return False

    hour = dt.datetime.strptime(f"{match[2]} {match[3]}", "%Y-%m-%d %H")
    start_ms = int(hour.replace(tzinfo=dt.UTC).timestamp() * 1000)
    if options.since_ms is not None and start_ms + HOUR_MS <= options.since_ms:
        return False
    return options.until_ms is None or start_ms <= options.until_ms
