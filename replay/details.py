"""The detail column of a timeline: what each event adds beyond its type, in a few words."""

from __future__ import annotations

from replay.events import Event
from replay.times import format_duration, format_ts


def int_or_none(text: str | None) -> int | None:
    """An attribute's integer value, or None when it is absent or not a number."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def by(event: Event) -> str:
    return f"by {event.attributes['by']}" if "by" in event.attributes else ""


def ran_for(event: Event) -> str:
    run_ms = int_or_none(event.attributes.get("run_ms"))
    return f"ran {format_duration(run_ms)}" if run_ms is not None else ""


def enqueue_detail(event: Event) -> str:
    due = f"due {format_ts(event.due_at_ms)}" if event.due_at_ms else ""
    limit = event.attributes.get("max_attempts")
    return joined(
        f"task {event.task}" if event.task else "",
        due,
        f"max_attempts {limit}" if limit else "",
        f"payload {event.payload}" if event.payload else "",
    )


def heartbeat_detail(event: Event) -> str:
    ttl = int_or_none(event.attributes.get("ttl_ms"))
    count = len(event.named_jobs)
    return joined(f"ttl {format_duration(ttl)}" if ttl else "", f"{count} job(s) in flight")


def finish_detail(event: Event) -> str:
    original = event.attributes.get("original_job")
    return joined(
        ran_for(event), event.reason or "", f"original job {original}" if original else ""
    )


def generic_detail(event: Event) -> str:
    parts = [event.error or "", event.reason or ""]
    if event.type == "retried":
        delay = int_or_none(event.attributes.get("delay_ms"))
        parts.append(f"delay {format_duration(delay)}" if delay else "at once")
    if event.due_at_ms:
        parts.append(f"due {format_ts(event.due_at_ms)}")
    parts.append(by(event))
    return joined(*parts)
