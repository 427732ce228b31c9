"""The PII scrubber (sinks/scrub.py); kept here so as not to clash with tests/sinks."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from ledger.event import JobEvent
from sinks.scrub import Detector, PathRule, ScrubAction, Scrubber, ScrubConfig

KEY = "test-only-key-0123456789abcdef"

# (text, the part that must not survive, the detector that finds it)
PII: list[tuple[str, str, Detector]] = [
    ("ada.lovelace@example.com", "ada.lovelace@example.com", Detector.EMAIL),
    ("j.doe+billing@mail.example.co.uk", "j.doe+billing@mail.example.co.uk", Detector.EMAIL),
    ("+1 (415) 555-2671", "555-2671", Detector.PHONE),
    ("+44 20 7946 0958", "7946 0958", Detector.PHONE),
    ("+33 1 23 45 67 89", "45 67 89", Detector.PHONE),
    ("+4915123456789", "4915123456789", Detector.PHONE),
    ("(415) 555-2671", "555-2671", Detector.PHONE),
    ("415-555-2671", "415-555-2671", Detector.PHONE),
    ("415.555.2671", "415.555.2671", Detector.PHONE),
    ("1-800-555-0199", "800-555-0199", Detector.PHONE),
    ("020 7946 0958", "7946 0958", Detector.PHONE),
    ("01 23 45 67 89", "23 45 67 89", Detector.PHONE),
    ("07700 900123", "07700 900123", Detector.PHONE),
    ("4111111111111111", "4111111111111111", Detector.CARD),
    ("4111 1111 1111 1111", "1111 1111 1111", Detector.CARD),
    ("5555-5555-5555-4444", "5555-5555-5555-4444", Detector.CARD),
    ("378282246310005", "378282246310005", Detector.CARD),
    ("3782 822463 10005", "822463 10005", Detector.CARD),
    ("6011111111111117", "6011111111111117", Detector.CARD),
    ("123-45-6789", "123-45-6789", Detector.SSN),
    ("078-05-1120", "078-05-1120", Detector.SSN),
    ("203.0.113.7", "203.0.113.7", Detector.IPV4),
    ("192.168.1.20", "192.168.1.20", Detector.IPV4),
    ("2001:db8::8a2e:370:7334", "2001:db8::8a2e:370:7334", Detector.IPV6),
    ("fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a", Detector.IPV6),
    ("2001:0db8:0000:0000:0000:ff00:0042:8329", "ff00:0042:8329", Detector.IPV6),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLW5vdC1yZWFs",
        "eyJzdWIiOiJhZGEifQ",
        Detector.JWT,
    ),
    ("Bearer 9f8e7d6c5b4a39281706abcdef", "9f8e7d6c5b4a39281706abcdef", Detector.BEARER),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", Detector.ACCESS_KEY),
    ("ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", Detector.ACCESS_KEY),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc", Detector.ACCESS_KEY),
    ("password=hunter2", "hunter2", Detector.CREDENTIAL),
    ("{'api_key': 'zx-81-secret'}", "zx-81-secret", Detector.CREDENTIAL),
    ("postgres://app:s3cr3t@db.internal:5432/app", "s3cr3t", Detector.CREDENTIAL),
]

NOT_PII = [
    "ORD-2024-000123",
    "INV-88213",
    "2024-01-15",
    "2024-01-15T10:20:30Z",
    "2024-01-15T10:20:30.123+02:00",
    "15/01/2024",
    "01.02.2024",
    "10:20:30",
    "1234.56",
    "€1,299.00",
    "42",
    "4111111111111112",  # fails Luhn
    "1764780000000",  # a timestamp in ms
    "550e8400-e29b-41d4-a716-446655440000",
    "v1.2.3",
    "127.0.0.1:6379",
    "::1",
    "qty 100 200 300",
    "error: timeout after 30s",
    "Release 2.10.1 on 2024-01-15 10:20",
    "d41d8cd98f00b204e9800998ecf8427e",
]


def _event(**fields: Any) -> JobEvent:
    return JobEvent(queue="orders", stream_id="1764780000000-1", type="enqueued", ts_ms=1, **fields)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child)


def _texts(event: JobEvent) -> list[str]:
    """Every string of an event that leaves the process scrubbed."""
    payload = json.loads(event.payload) if event.payload else None
    return [*_strings(payload), event.error or "", *event.attributes.values()]


def _hashing(**config: Any) -> Scrubber:
    return Scrubber(ScrubConfig(hmac_key=KEY, hmac_key_id="k1", **config))


# --- detectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "secret", "kind"), PII)
def test_each_pii_sample_is_found_by_its_detector(text: str, secret: str, kind: Detector) -> None:
    """The corpus is meaningful: every sample is a hit, of the expected kind."""
    assert [finding.kind for finding in Scrubber().findings(text)] == [kind]


@pytest.mark.parametrize("text", NOT_PII)
def test_ordinary_values_are_left_alone(text: str) -> None:
    """Order ids, dates, times, amounts, small numbers, failing Luhn: no hit, no change."""
    scrubber = Scrubber()

    assert scrubber.findings(text) == []
    assert scrubber.scrub_text(text) == text


def test_pii_nested_anywhere_leaves_no_detector_hit_after_scrubbing() -> None:
    """Samples in dicts, lists, keys, sentences, error text and attributes are all scrubbed."""
    samples = [text for text, _, _ in PII]
    payload = {
        "contact": {"value": samples[0], "history": [{"note": f"call {s} today"} for s in samples]},
        "raw": samples,
        samples[1]: "keyed by an email",
    }
    event = _event(
        payload=json.dumps(payload),
        error="; ".join(f"failed for {s}" for s in samples),
        attributes={f"a{i}": s for i, s in enumerate(samples)},
    )
    scrubber = Scrubber()

    scrubbed = scrubber.scrub(event)

    texts = _texts(scrubbed)
    assert [t for t in texts if scrubber.findings(t)] == []
    blob = json.dumps(texts)
    assert [secret for _, secret, _ in PII if secret in blob] == []


def test_marks_say_what_was_removed() -> None:
    """Redaction markers name the detector, so an auditor knows what was there."""
    scrubbed = Scrubber().scrub_text("mail ada@example.com from 203.0.113.7, password=hunter2")

    assert scrubbed == "mail [REDACTED:email] from [REDACTED:ipv4], password=[REDACTED:credential]"


def test_non_pii_payload_comes_back_equal_and_compact() -> None:
    """Ordinary values survive; the JSON is re-serialised without spaces."""
    payload = {"order": "ORD-2024-000123", "at": "2024-01-15T10:20:30Z", "qty": 2, "ts": 17647800}
    event = _event(payload=json.dumps(payload, indent=2))

    scrubbed = Scrubber().scrub(event)

    assert scrubbed.payload == json.dumps(payload, separators=(",", ":"))


def test_large_integers_are_checked_as_card_numbers() -> None:
    """A Luhn-valid 16-digit integer is redacted; timestamps and failing numbers are not."""
    payload = {"n": 4111111111111111, "ts": 1764780000000, "bad": 4111111111111112, "q": 7}

    scrubbed = Scrubber().scrub_value(payload)

    assert scrubbed == {**payload, "n": "[REDACTED:card]"}


# --- key names, paths, actions -------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "userPassword",
        "X-Api-Key",
        "api key",
        "Set-Cookie",
        "user_email_address",
        "SSN",
        "customerSSNLast4",
        "cvv2",
        "credit-card-number",
        "IBAN",
        "refresh_token",
    ],
)
def test_denied_key_names_match_across_case_and_separators(key: str) -> None:
    """The whole value under a denied key is redacted, whatever its type."""
    scrubbed = Scrubber().scrub_value({key: {"anything": [1, "x"]}, "id": 7})

    assert scrubbed[key].startswith("[REDACTED:")
    assert scrubbed["id"] == 7


@pytest.mark.parametrize("key", ["class_name", "business_name", "order_id", "author", "amount"])
def test_short_terms_match_whole_words_only(key: str) -> None:
    """`ssn` inside `classname` or `auth` inside `author` is not a denied key."""
    assert Scrubber().scrub_value({key: "Ada"}) == {key: "Ada"}


def test_allowed_keys_are_exempt_from_the_denylist_only() -> None:
    """`max_tokens` can be allowed; its value is still checked by the detectors."""
    scrubber = Scrubber(ScrubConfig(allowed_keys=("max_tokens",)))

    scrubbed = scrubber.scrub_value({"max_tokens": 100, "maxTokens": "ada@example.com"})

    assert scrubbed == {"max_tokens": 100, "maxTokens": "[REDACTED:email]"}


def test_drop_action_removes_denied_keys() -> None:
    """With key_action=drop the key disappears from payload and attributes."""
    scrubber = Scrubber(ScrubConfig(key_action=ScrubAction.DROP))
    event = _event(payload='{"password":"x","id":1}', attributes={"session_id": "s", "n": "1"})

    scrubbed = scrubber.scrub(event)

    assert (scrubbed.payload, scrubbed.attributes) == ('{"id":1}', {"n": "1"})


def test_path_rules_match_dotted_paths_with_wildcards() -> None:
    """`*` matches any key or list index; a path rule beats the key denylist."""
    rules = (
        PathRule(path="customer.delivery.street"),
        PathRule(path="customer.notes", action=ScrubAction.DROP),
        PathRule(path="items.*.sku", action=ScrubAction.HASH),
        PathRule(path="*.email", action=ScrubAction.HASH),
    )
    payload = {
        "customer": {
            "delivery": {"street": "12 Analytical St", "city": "London"},
            "notes": ["door code 1234"],
            "email": "ada@example.com",
        },
        "items": [{"sku": "SKU-1"}, {"sku": "SKU-2", "qty": 1}],
    }

    scrubbed = _hashing(path_rules=rules).scrub_value(payload)

    assert scrubbed["customer"]["delivery"] == {"street": "[REDACTED:path]", "city": "London"}
    assert "notes" not in scrubbed["customer"]
    assert scrubbed["customer"]["email"].startswith("hmac:k1:")
    assert [item["sku"][:8] for item in scrubbed["items"]] == ["hmac:k1:", "hmac:k1:"]
    assert scrubbed["items"][1]["qty"] == 1


def test_drop_path_rule_on_list_items_removes_them() -> None:
    """A wildcard drop over a list leaves an empty list, not holes."""
    scrubber = Scrubber(ScrubConfig(path_rules=(PathRule(path="tags.*", action="drop"),)))

    assert scrubber.scrub_value({"tags": ["a", "b"], "n": 1}) == {"tags": [], "n": 1}


def test_hash_is_a_keyed_hmac_recording_the_key_id() -> None:
    """hmac:<key id>:<first 32 hex of HMAC-SHA256(key, value)>, stable across events."""
    scrubber = _hashing(key_action=ScrubAction.HASH)
    expected = hmac.new(KEY.encode(), b"ada@example.com", hashlib.sha256).hexdigest()[:32]

    first = scrubber.scrub_value({"email": "ada@example.com"})
    second = scrubber.scrub_value({"user_email": "ada@example.com"})

    assert first["email"] == second["user_email"] == f"hmac:k1:{expected}"


def test_hash_changes_with_the_key() -> None:
    """Another key gives another token, so tokens cannot be joined across keys."""
    other = Scrubber(
        ScrubConfig(key_action="hash", hmac_key="another-key-0123456789", hmac_key_id="k2")
    )
    value = {"email": "ada@example.com"}

    ours = _hashing(key_action=ScrubAction.HASH).scrub_value(value)["email"]
    theirs = other.scrub_value(value)["email"]

    assert ours[8:] != theirs[8:]
    assert theirs.startswith("hmac:k2:")


def test_detector_matches_can_be_hashed_per_kind() -> None:
    """Emails hashed (joinable), phones still redacted."""
    scrubber = _hashing(detector_actions={Detector.EMAIL: ScrubAction.HASH})

    text = scrubber.scrub_text("ada@example.com or +44 20 7946 0958")

    assert text.startswith("hmac:k1:")
    assert text.endswith(" or [REDACTED:phone]")


def test_keys_that_scrub_to_the_same_marker_keep_both_values() -> None:
    """Emails used as keys become markers; a suffix keeps the second value."""
    scrubbed = Scrubber().scrub_value({"a@example.com": 1, "b@example.com": 2})

    assert scrubbed == {"[REDACTED:email]": 1, "[REDACTED:email]#2": 2}


# --- events --------------------------------------------------------------------------


def test_scrubbing_is_idempotent_so_hashes_survive_a_second_pass() -> None:
    """An event scrubbed twice (primary, then fallback sink) equals one scrubbed once."""
    samples = [text for text, _, _ in PII]
    payload = {"email": "ada@example.com", "raw": samples, "ada@example.com": 1}
    event = _event(payload=json.dumps(payload), error=" ".join(samples), attributes={"t": "x"})

    for scrubber in (Scrubber(), _hashing(key_action="hash", value_action="hash")):
        once = scrubber.scrub(event)
        assert scrubber.scrub(once) == once


def test_scrub_returns_a_new_event_and_leaves_the_original_alone() -> None:
    """The input event (and its attributes dict) is not modified."""
    event = _event(payload='{"email":"ada@example.com"}', attributes={"ip": "203.0.113.7"})

    scrubbed = Scrubber().scrub(event)

    assert scrubbed is not event
    assert event.attributes == {"ip": "203.0.113.7"}
    assert event.payload == '{"email":"ada@example.com"}'
    assert scrubbed.attributes == {"ip": "[REDACTED:ipv4]"}


def test_event_with_nothing_to_scrub_is_returned_as_it_is() -> None:
    """No copy is made when no field changes."""
    event = _event(payload='{"id":1}', error="timeout", attributes={"lane": "high"})

    assert Scrubber().scrub(event) is event


def test_invalid_payload_json_is_replaced_wholesale_by_a_marker() -> None:
    """Unparseable text cannot be walked, so none of it is kept; a warning is logged."""
    event = _event(payload="{not json ada@example.com")

    with capture_logs() as logs:
        scrubbed = Scrubber().scrub(event)

    assert json.loads(scrubbed.payload or "") == "[REDACTED:invalid_json]"
    assert logs == [
        {
            "event": "payload_not_scrubbable",
            "log_level": "warning",
            "queue": "orders",
            "event_id": event.event_id,
            "job_id": None,
            "kind": "invalid_json",
            "next_step": "payload replaced by a redaction marker",
        }
    ]


def test_payload_deeper_than_max_depth_is_replaced_wholesale() -> None:
    """Deep nesting is refused rather than risking the recursion limit."""
    deep = "[" * 10 + '"ada@example.com"' + "]" * 10
    scrubber = Scrubber(ScrubConfig(max_depth=5))

    with capture_logs():
        scrubbed = scrubber.scrub(_event(payload=deep))

    assert scrubbed.payload == '"[REDACTED:too_deep]"'


def test_non_ascii_text_stays_readable_and_escaped_surrogates_stay_escaped() -> None:
    """`café` is written as is; a lone surrogate escape is kept so UTF-8 can encode it."""
    scrubber = Scrubber()

    plain = scrubber.scrub(_event(payload='{"note": "café ada@example.com"}')).payload
    escaped = scrubber.scrub(_event(payload='{"x": "\\ud800", "y": "ada@example.com"}')).payload

    assert plain == '{"note":"café [REDACTED:email]"}'
    assert escaped == '{"x":"\\ud800","y":"[REDACTED:email]"}'
    assert escaped.encode()


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"key_action": "hash"}, "needs hmac_key and hmac_key_id"),
        ({"key_action": "hash", "hmac_key": KEY}, "needs hmac_key and hmac_key_id"),
        ({"value_action": "hash", "hmac_key": "short", "hmac_key_id": "k"}, "at least 16"),
        ({"key_action": "hash", "hmac_key": KEY, "hmac_key_id": "a:b"}, "must match"),
        ({"value_action": "drop"}, "use redact or hash"),
        ({"detector_actions": {"email": "drop"}}, "use redact or hash"),
        ({"path_rules": [{"path": "a..b"}]}, "empty segment"),
        ({"path_rules": [{"path": "a", "action": "hash"}]}, "needs hmac_key"),
        ({"max_depth": 5000}, "less than or equal to 200"),
        ({"denylist": ["x"]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    config: dict[str, Any], words: str
) -> None:
    """Hashing without a key (none is built in), drop on text, bad paths all fail early."""
    with pytest.raises(ValidationError, match=words):
        ScrubConfig.model_validate(config)


def test_defaults_turn_every_detector_on_and_redact() -> None:
    """The default configuration needs no key and redacts."""
    config = ScrubConfig()

    assert config.detectors == frozenset(Detector)
    assert config.actions() == {ScrubAction.REDACT}


def test_disabled_detectors_leave_their_matches() -> None:
    """Detectors can be switched off one by one; key names still apply."""
    scrubber = Scrubber(ScrubConfig(detectors=frozenset({Detector.EMAIL})))

    scrubbed = scrubber.scrub_value({"a": "ada@example.com 203.0.113.7", "phone": "x"})

    assert scrubbed == {"a": "[REDACTED:email] 203.0.113.7", "phone": "[REDACTED:phone]"}


def test_names_and_postal_addresses_are_denied_by_default() -> None:
    """A customer's name and address identify a person as surely as an email does."""
    payload = {"customer_name": "Ada", "shipping_address": "1 Road", "order_id": 5}

    scrubbed = Scrubber().scrub_value(payload)

    assert scrubbed["customer_name"].startswith("[REDACTED")
    assert scrubbed["shipping_address"].startswith("[REDACTED")
    assert scrubbed["order_id"] == 5
