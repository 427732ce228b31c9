"""Readers for every place the ledger is kept, one module per kind of source.

/var/lib/jobqueue/ledger          a local NDJSON folder (or file:///var/lib/...)
s3://bucket/prefix                Avro container files written by the S3 sink
kafka://host:port[,host:port]/t   a topic of Avro single-object records
redis://host:port/db              the un-shipped tail still in the outbox streams
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from pathlib import Path

from replay.errors import BadInput
from replay.sources.base import (
    DEFAULT_KAFKA_TIMEOUT_S,
    DEFAULT_NAMESPACE,
    NoProgress,
    Problem,
    Progress,
    ReadOptions,
    Source,
    SourceReport,
)
from replay.sources.kafka import KafkaSource
from replay.sources.ndjson import NdjsonSource
from replay.sources.redis import RedisSource
from replay.sources.s3 import S3Source

__all__ = [
    "DEFAULT_KAFKA_TIMEOUT_S",
    "DEFAULT_NAMESPACE",
    "KafkaSource",
    "NdjsonSource",
    "NoProgress",
    "Problem",
    "Progress",
    "ReadOptions",
    "RedisSource",
    "S3Source",
    "Source",
    "SourceReport",
    "parse_source",
    "parse_sources",
]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def parse_source(text: str) -> Source:
    """The source an address names; raises `BadInput` for one that names none."""
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _REDIS_SCHEMES:
        return RedisSource(text)
    if scheme == "s3":
        return _s3(text, parts)
    if scheme == "kafka":
        return _kafka(text, parts)
    if scheme == "file":
        return NdjsonSource(Path(urllib.parse.unquote(parts.path)))
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive, a path
        msg = f"unknown source {text!r}: give a folder, s3://, kafka:// or redis:// address"
        raise BadInput(msg)
    return NdjsonSource(Path(text))


def parse_sources(texts: list[str]) -> list[Source]:
    """Sources for the addresses, named by kind (`ndjson`, then `ndjson#2`, ...)."""
    sources = [parse_source(text) for text in texts]
    seen: Counter[str] = Counter()
    for source in sources:
        seen[source.kind] += 1
        if seen[source.kind] > 1:
            source.rename(f"{source.kind}#{seen[source.kind]}")
    return sources


def _s3(text: str, parts: urllib.parse.SplitResult) -> Source:
    if not parts.netloc:
        msg = f"source {text!r} names no bucket: give s3://bucket/prefix"
        raise BadInput(msg)
    return S3Source(parts.netloc, urllib.parse.unquote(parts.path))


def _kafka(text: str, parts: urllib.parse.SplitResult) -> Source:
    topic = parts.path.strip("/")
    if not parts.netloc or not topic or "/" in topic:
        msg = f"source {text!r} is not kafka://host:port/topic"
        raise BadInput(msg)
    return KafkaSource(parts.netloc, topic)
