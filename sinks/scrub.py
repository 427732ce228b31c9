"""PII scrubber: every event is scrubbed before it leaves the process (DESIGN invariant 6).

`Scrubber.scrub` returns a new event whose payload (JSON text, parsed and walked), error
text and attribute values carry no personal data or secrets (or the event itself when
nothing needed scrubbing). For each payload value the first rule that applies wins:

1. a path rule (`customer.address.street`, `*` matching any key or list index);
2. a denied key name (case-insensitive, ignoring `-`, `_`, spaces and camelCase; terms of
   four letters or fewer such as `ssn` must be a whole word of the key, longer terms may
   appear anywhere in it, so `user_email_address` is denied but `class_name` is not, and
   `max_tokens` or `headphones` are denied too unless listed in `allowed_keys`);
3. value detectors on every string, including keys and error text: email, phone, card
   (Luhn-checked), US SSN, IPv4, IPv6, JWT, bearer token, cloud access key, and
   `password=...`-style credentials. Integers of 13 to 19 digits are checked as cards.

Actions: `redact` writes `[REDACTED:<kind>]`; `drop` removes the key (or list item);
`hash` writes `hmac:<key id>:<first 32 hex chars of HMAC-SHA256>`, so equal values stay
joinable without being readable. Text matches can only be redacted or hashed.

Scrubbing is idempotent: markers and HMAC tokens already in a value are left as they
are, so an event scrubbed twice (primary sink, then fallback) keeps the same hashes.

A payload that is not JSON, or nested deeper than `max_depth`, is replaced wholesale by a
JSON string marker (`"[REDACTED:invalid_json]"`, `"[REDACTED:too_deep]"`).

Known limits: a credential value is taken to be one word, so `password: two words`
leaves the second word; phone numbers stored as JSON integers and digits outside ASCII
are not detected; loopback and unspecified IP addresses are kept, as they identify
nobody; `job_id`, `worker`, `reason`, `trace_id` and attribute names are not scrubbed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, NamedTuple, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ledger.event import JobEvent

log = structlog.get_logger(__name__)


class ScrubAction(StrEnum):
    """What happens to a value a rule selects."""

    REDACT = "redact"
    DROP = "drop"
    HASH = "hash"


class Detector(StrEnum):
    """Kinds of personal data or secrets recognised inside strings."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    SSN = "ssn"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    JWT = "jwt"
    BEARER = "bearer"
    ACCESS_KEY = "access_key"
    CREDENTIAL = "credential"


DEFAULT_DENIED_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "session id",
    "api key",
    "access key",
    "private key",
    "email",
    "phone",
    "ssn",
    "social security",
    "credit card",
    "card number",
    "cvv",
    "cvc",
    "iban",
    "passport",
    "date of birth",
    "birth date",
    # Names and postal addresses identify people as surely as an email does.
    "full name",
    "first name",
    "last name",
    "customer name",
    "address",
    "street",
    "postcode",
    "postal code",
    "zip code",
)

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MIN_HMAC_KEY_BYTES = 16


class PathRule(BaseModel):
    """An action for the payload value at a dotted path; `*` matches any one key or index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    action: ScrubAction = ScrubAction.REDACT

    @field_validator("path")
    @classmethod
    def _segments_not_empty(cls, path: str) -> str:
        if not path or "" in path.split("."):
            msg = f"path {path!r} has an empty segment"
            raise ValueError(msg)
        return path


class ScrubConfig(BaseModel):
    """Scrubbing rules; the defaults turn every detector and the key denylist on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    denied_keys: tuple[str, ...] = DEFAULT_DENIED_KEYS
    allowed_keys: tuple[str, ...] = Field(
        default=(), description="Exact key names exempt from the denylist (not from detectors)."
    )
    key_action: ScrubAction = ScrubAction.REDACT
    detectors: frozenset[Detector] = frozenset(Detector)
    value_action: ScrubAction = ScrubAction.REDACT
    detector_actions: dict[Detector, ScrubAction] = Field(default_factory=dict)
    path_rules: tuple[PathRule, ...] = ()
    hmac_key: SecretStr | None = None
    hmac_key_id: str | None = None
    # Each level costs three Python frames; 200 stays clear of the recursion limit.
    max_depth: int = Field(default=64, ge=1, le=200)

    @field_validator("value_action")
    @classmethod
    def _text_action(cls, action: ScrubAction) -> ScrubAction:
        return _no_drop(action)

    @field_validator("detector_actions")
    @classmethod
    def _text_actions(cls, actions: dict[Detector, ScrubAction]) -> dict[Detector, ScrubAction]:
        return {kind: _no_drop(action) for kind, action in actions.items()}

    @model_validator(mode="after")
    def _hashing_has_a_key(self) -> Self:
        if ScrubAction.HASH not in self.actions():
            return self
        if self.hmac_key is None or self.hmac_key_id is None:
            msg = "the hash action needs hmac_key and hmac_key_id; no key is built in"
            raise ValueError(msg)
        if len(self.hmac_key.get_secret_value().encode()) < _MIN_HMAC_KEY_BYTES:
            msg = f"hmac_key must be at least {_MIN_HMAC_KEY_BYTES} bytes"
            raise ValueError(msg)
        if not _KEY_ID.fullmatch(self.hmac_key_id):
            msg = f"hmac_key_id {self.hmac_key_id!r} must match {_KEY_ID.pattern}"
            raise ValueError(msg)
        return self

    def actions(self) -> set[ScrubAction]:
        """Every action some rule of this configuration may take."""
        rules = {rule.action for rule in self.path_rules}
        return {self.key_action, self.value_action, *self.detector_actions.values(), *rules}


def _no_drop(action: ScrubAction) -> ScrubAction:
    if action is ScrubAction.DROP:
        msg = "drop cannot apply to a match inside text; use redact or hash"
        raise ValueError(msg)
    return action


class Finding(NamedTuple):
    """A detector match inside a string: its kind and [start, end) offsets."""

    kind: Detector
    start: int
    end: int


# --- value detectors -----------------------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


_NON_DIGITS = re.compile(r"[^0-9]+")


def _digits(text: str) -> str:
    return _NON_DIGITS.sub("", text)


def _is_card(text: str) -> bool:
    # Major networks start with 2 to 6; this also spares ms/us timestamps (they start with 1).
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits)


def _digit_count(low: int, high: int) -> Callable[[str], bool]:
    return lambda text: low <= len(_digits(text)) <= high


def _is_ipv4(text: str) -> bool:
    # The regex gave four groups of 1-3 digits; loopback and 0.0.0.0 identify nobody.
    octets = text.split(".")
    return (
        all(int(octet) <= 255 for octet in octets)
        and octets[0] != "127"
        and any(int(octet) for octet in octets)
    )


def _is_ipv6(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


# A gate is a cheap test on (text, number of ASCII digits in it) that must pass before
# the pattern's regex runs: most strings of a payload pass none, and one regex per
# detector measured faster than a single alternation of all of them.
_Gate = Callable[[str, int], bool]


class _Pattern(NamedTuple):
    kind: Detector
    gate: _Gate
    regex: re.Pattern[str]
    group: int | str  # the part of the match that is replaced
    check: Callable[[re.Match[str]], bool] | None  # rejects look-alikes (Luhn, ranges...)


def _pattern(
    kind: Detector,
    gate: _Gate,
    regex: str,
    check: Callable[[str], bool] | None = None,
    group: str = "",
) -> _Pattern:
    whole = None if check is None else (lambda match: check(match.group(group or 0)))
    return _Pattern(kind, gate, re.compile(regex), group or 0, whole)


_CARD_RE = (
    r"(?<!\d)(?:[2-6]\d{12,18}|[2-6]\d{3}(?:(?P<card_sep>[ -])\d{4}(?P=card_sep)\d{4}"
    r"(?P=card_sep)\d{1,4}(?:(?P=card_sep)\d{1,3})?|(?P<amex_sep>[ -])\d{6}(?P=amex_sep)\d{4,5}))"
    r"(?!\d)"
)
_IPV6_RE = (
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\d)"
)
_ACCESS_KEY_RE = (
    r"\b(?:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-[A-Za-z0-9-]{10,})\b"
)
# A credential value: one word, optionally after an auth scheme, never our own output.
_VALUE_AFTER_NAME = (
    r"(?P<cred_value>(?!\[REDACTED:|hmac:)(?:(?:bearer|basic|token)\s+)?[^\s\"',;&}\])]+)"
)

_BEARER_HINT = re.compile(r"(?i:bearer)")
_ACCESS_KEY_HINT = re.compile(r"AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|[sr]k_|gh[pousr]_|xox")

# Every gate below needs one of these; a string with none of them skips every detector.
_SYMBOLS = re.compile(rf"[@:=]|eyJ|{_BEARER_HINT.pattern}|{_ACCESS_KEY_HINT.pattern}")
_INTERESTING = re.compile(rf"[0-9]|{_SYMBOLS.pattern}")
_DIGIT_KINDS = frozenset({Detector.PHONE, Detector.CARD, Detector.SSN, Detector.IPV4})
_MIN_DIGITS = 4  # the fewest any detector of _DIGIT_KINDS needs (1.2.3.4)

# Common values that are known to hold none of the above: ISO dates and times, UUIDs.
_PLAIN = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

_FIXED_PATTERNS: tuple[_Pattern, ...] = (
    _pattern(
        Detector.EMAIL,
        lambda t, d: "@" in t,
        r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b",
    ),
    _pattern(
        Detector.PHONE,
        lambda t, d: d >= 8 and "+" in t,
        r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){6,14}(?!\d)",
        _digit_count(8, 15),
    ),
    _pattern(
        Detector.PHONE,
        lambda t, d: d >= 10,
        r"(?<![\w+.-])(?:1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])"
        r"[2-9]\d{2}[ .-]\d{4}(?![\w-]|[.,]\d)",
    ),
    _pattern(
        Detector.PHONE,
        lambda t, d: d >= 9,
        r"(?<![\w+.,/:-])0\d{1,4}(?:[ .-]\d{2,8}){1,4}(?![\w/:-]|[.,]\d)",
        _digit_count(9, 12),
    ),
    _pattern(Detector.CARD, lambda t, d: d >= 13, _CARD_RE, _is_card),
    _pattern(
        Detector.SSN,
        lambda t, d: d >= 9 and "-" in t,
        r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])",
    ),
    _pattern(
        Detector.IPV4,
        lambda t, d: d >= 4 and t.count(".") >= 3,
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
        _is_ipv4,
    ),
    _pattern(Detector.IPV6, lambda t, d: t.count(":") >= 2, _IPV6_RE, _is_ipv6),
    _pattern(
        Detector.JWT,
        lambda t, d: "eyJ" in t,
        r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
    ),
    _pattern(
        Detector.BEARER,
        lambda t, d: _BEARER_HINT.search(t) is not None,
        r"(?i:\bbearer\s+(?P<bearer_token>[A-Za-z0-9._~+/=-]{8,}))",
        group="bearer_token",
    ),
    _pattern(
        Detector.ACCESS_KEY, lambda t, d: _ACCESS_KEY_HINT.search(t) is not None, _ACCESS_KEY_RE
    ),
    _pattern(
        Detector.CREDENTIAL,
        lambda t, d: "://" in t and "@" in t,
        r"(?i:\b[a-z][a-z0-9+.-]*://[^\s/:@]+:(?P<url_password>[^\s/@]+)@)",
        group="url_password",
    ),
)

# Most specific first: an SSN is also shaped like a national phone number.
_SPECIFICITY = {
    kind: rank
    for rank, kind in enumerate(
        (
            Detector.CREDENTIAL,
            Detector.BEARER,
            Detector.JWT,
            Detector.ACCESS_KEY,
            Detector.CARD,
            Detector.SSN,
            Detector.EMAIL,
            Detector.IPV4,
            Detector.IPV6,
            Detector.PHONE,
        )
    )
}

# Values the scrubber wrote itself; never scrubbed again (idempotence).
_SCRUBBED = re.compile(r"\[REDACTED:[a-z0-9_]+\]|hmac:[A-Za-z0-9_.-]{1,32}:[0-9a-f]{32}")
_SCRUBBED_HINTS = ("[REDACTED:", "hmac:")


# --- key names -----------------------------------------------------------------------

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_KEY_SEPARATORS = re.compile(r"[-_\s]+")
_SHORT_TERM = 4


def _key_words(key: str) -> list[str]:
    spaced = _CAMEL_BOUNDARY.sub(" ", key)
    return [word for word in _KEY_SEPARATORS.split(spaced.lower()) if word]


def _compact(name: str) -> str:
    return "".join(_key_words(name))


def _compact_text(text: str) -> str:
    # Every key name in the text becomes its compact form, so denied terms can be found.
    return _KEY_SEPARATORS.sub("", text.lower())


# --- the scrubber --------------------------------------------------------------------

_DROP = object()
_Json = Any


class _PayloadUnscrubbable(Exception):
    """Raised when a payload cannot be walked; it is then replaced wholesale."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Rule(NamedTuple):
    segments: tuple[str, ...]
    action: ScrubAction


_Active = tuple[tuple[_Rule, int], ...]


class Scrubber:
    """Applies a `ScrubConfig` to events; built once, used for every event."""

    def __init__(self, config: ScrubConfig | None = None) -> None:
        self.config = config if config is not None else ScrubConfig()
        self._terms = tuple(_compact(term) for term in self.config.denied_keys)
        self._short_terms = tuple(term for term in self._terms if len(term) <= _SHORT_TERM)
        self._long_terms = tuple(term for term in self._terms if len(term) > _SHORT_TERM)
        self._allowed = frozenset(_compact(key) for key in self.config.allowed_keys)
        self._term_hint = re.compile("|".join(re.escape(term) for term in self._terms))
        patterns = self._build_patterns()
        self._digit_patterns = tuple(p for p in patterns if p.kind in _DIGIT_KINDS)
        self._symbol_patterns = tuple(p for p in patterns if p.kind not in _DIGIT_KINDS)
        self._max_depth = self.config.max_depth
        self._rules: _Active = tuple(
            (_Rule(tuple(rule.path.split(".")), rule.action), 0) for rule in self.config.path_rules
        )
        key = self.config.hmac_key
        self._hmac_key = key.get_secret_value().encode() if key else b""
        # Keys repeat from event to event: cache what is decided about them.
        self.denied_term = functools.lru_cache(maxsize=4096)(self._denied_term)
        self._scrub_key = functools.lru_cache(maxsize=4096)(self.scrub_text)

    def _build_patterns(self) -> tuple[_Pattern, ...]:
        enabled = self.config.detectors
        patterns = [pattern for pattern in _FIXED_PATTERNS if pattern.kind in enabled]
        if Detector.CREDENTIAL in enabled and self._terms:
            patterns.append(self._name_value_pattern())
        return tuple(patterns)

    def _name_value_pattern(self) -> _Pattern:
        """`<name>=<value>` or `<name>: <value>` in text, where the name is a denied key."""
        name = r"(?<![\w.-])(?P<cred_name>[A-Za-z][\w.-]{0,63}?)"
        regex = rf"(?i:{name}[\"']?\s*[:=]\s*[\"']?{_VALUE_AFTER_NAME})"
        gate, check = self._may_name_a_denied_key, self._denied_name
        return _Pattern(Detector.CREDENTIAL, gate, re.compile(regex), "cred_value", check)

    def _may_name_a_denied_key(self, text: str, digits: int) -> bool:
        if "=" not in text and ":" not in text:
            return False
        return self._term_hint.search(_compact_text(text)) is not None

    def _denied_name(self, match: re.Match[str]) -> bool:
        return self.denied_term(match.group("cred_name")) is not None

    # -- events ---------------------------------------------------------------------

    def scrub(self, event: JobEvent) -> JobEvent:
        """A copy of the event with payload, error and attribute values scrubbed.

        An event with nothing to scrub is returned as it is (events are immutable).
        """
        payload = None if event.payload is None else self._scrub_payload(event, event.payload)
        error = None if event.error is None else self.scrub_text(event.error)
        attributes = self.scrub_attributes(event.attributes)

        if (payload, error, attributes) == (event.payload, event.error, event.attributes):
            return event
        return dataclasses.replace(event, payload=payload, error=error, attributes=attributes)

    def _scrub_payload(self, event: JobEvent, text: str) -> str:
        """The payload, scrubbed and re-serialised as compact JSON text."""
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return self._replace_payload(event, "invalid_json")

        try:
            value = self.scrub_value(parsed)
        except _PayloadUnscrubbable as exc:
            return self._replace_payload(event, exc.kind)

        # Keep \u escapes as escapes: a lone surrogate could not be written as UTF-8.
        return json.dumps(value, separators=(",", ":"), ensure_ascii="\\u" in text)

    def _replace_payload(self, event: JobEvent, kind: str) -> str:
        log.warning(
            "payload_not_scrubbable",
            queue=event.queue,
            event_id=event.event_id,
            job_id=event.job_id,
            kind=kind,
            next_step="payload replaced by a redaction marker",
        )
        return json.dumps(_marker(kind))

    def scrub_attributes(self, attributes: dict[str, str]) -> dict[str, str]:
        """Attribute values scrubbed; a denied attribute name gets the key action."""
        scrubbed = {}
        for key, value in attributes.items():
            term = self.denied_term(key)
            new = (
                self._apply(self.config.key_action, value, term) if term else self.scrub_text(value)
            )
            if new is not _DROP:
                scrubbed[key] = new
        return scrubbed

    # -- payload values -------------------------------------------------------------

    def scrub_value(self, value: _Json) -> _Json:
        """A parsed JSON value with every rule applied (a new value; the input is kept)."""
        return self._walk(value, self._rules, 0)

    def _walk(self, value: _Json, rules: _Active, depth: int) -> _Json:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return self._walk_object(value, rules, depth + 1)
        if isinstance(value, list):
            return self._walk_array(value, rules, depth + 1)
        if type(value) is int and Detector.CARD in self.config.detectors:
            return self._scrub_int(value)
        return value

    def _walk_object(self, value: dict[str, _Json], rules: _Active, depth: int) -> _Json:
        self._check_depth(depth)
        scrubbed: dict[str, _Json] = {}
        for key, child in value.items():
            new = self._child(key, child, rules, depth, is_key=True)
            if new is _DROP:
                continue
            new_key = self._scrub_key(key)
            if new_key in scrubbed:  # two keys scrubbed to one marker: keep both values
                new_key = _unique(new_key, scrubbed)
            scrubbed[new_key] = new
        return scrubbed

    def _walk_array(self, value: list[_Json], rules: _Active, depth: int) -> _Json:
        self._check_depth(depth)
        items = (self._child(i, child, rules, depth) for i, child in enumerate(value))
        return [item for item in items if item is not _DROP]

    def _check_depth(self, depth: int) -> None:
        if depth > self._max_depth:
            raise _PayloadUnscrubbable("too_deep")

    def _child(
        self, name: str | int, value: _Json, rules: _Active, depth: int, *, is_key: bool = False
    ) -> _Json:
        if rules:
            matched, rules = _advance(rules, str(name))
            if matched is not None:
                return self._apply(matched.action, value, "path")

        term = self.denied_term(name) if is_key else None
        if term:
            return self._apply(self.config.key_action, value, term)
        return self._walk(value, rules, depth)

    def _scrub_int(self, value: int) -> _Json:
        if not 10**12 <= abs(value) < 10**19 or not _is_card(str(abs(value))):
            return value
        return self._replace_text(Detector.CARD, str(value))

    def _apply(self, action: ScrubAction, value: _Json, kind: str) -> _Json:
        if action is ScrubAction.DROP:
            return _DROP
        if isinstance(value, str) and _SCRUBBED.fullmatch(value):
            return value
        if action is ScrubAction.HASH:
            return self._hmac_token(value)
        return _marker(kind)

    def _hmac_token(self, value: _Json) -> str:
        """`hmac:<key id>:<32 hex chars>`, keyed so equal values match only under one key."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        digest = hmac.new(self._hmac_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"hmac:{self.config.hmac_key_id}:{digest.hexdigest()[:32]}"

    # -- key names ------------------------------------------------------------------

    def _denied_term(self, key: str) -> str | None:
        """The denylist term a key name matches, if any (see the module docstring)."""
        words = _key_words(key)
        compact = "".join(words)
        if compact in self._allowed or _SCRUBBED.match(key):  # a key scrubbed earlier
            return None

        bare = {word.rstrip("0123456789") for word in words}  # cvv2, ssn4
        short = next((term for term in self._short_terms if term in bare), None)
        return short or next((term for term in self._long_terms if term in compact), None)

    # -- text -----------------------------------------------------------------------

    def scrub_text(self, text: str) -> str:
        """The text with every detector match redacted or hashed."""
        findings = self.findings(text)
        if not findings:
            return text

        pieces, position = [], 0
        for finding in findings:
            pieces.append(text[position : finding.start])
            pieces.append(self._replace_text(finding.kind, text[finding.start : finding.end]))
            position = finding.end
        pieces.append(text[position:])
        return "".join(pieces)

    def _replace_text(self, kind: Detector, matched: str) -> str:
        action = self.config.detector_actions.get(kind, self.config.value_action)
        return self._hmac_token(matched) if action is ScrubAction.HASH else _marker(kind)

    def findings(self, text: str) -> list[Finding]:
        """Detector matches in the text, overlaps merged, outside earlier scrub output."""
        if not _INTERESTING.search(text) or _PLAIN.fullmatch(text):
            return []

        digits = len(_digits(text))
        patterns = self._digit_patterns if digits >= _MIN_DIGITS else ()
        if _SYMBOLS.search(text):
            patterns += self._symbol_patterns
        selected = [pattern for pattern in patterns if pattern.gate(text, digits)]
        found = [f for pattern in selected for f in self._matches(pattern, text)]
        if not found:
            return []
        if any(hint in text for hint in _SCRUBBED_HINTS):
            found = _outside(found, [m.span() for m in _SCRUBBED.finditer(text)])
        return _merged(found)

    def _matches(self, pattern: _Pattern, text: str) -> Iterable[Finding]:
        for match in pattern.regex.finditer(text):
            if pattern.check is None or pattern.check(match):
                yield Finding(pattern.kind, *match.span(pattern.group))


def _marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def _unique(key: str, taken: dict[str, _Json]) -> str:
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = f"{key}#{n}"
    return candidate


def _advance(rules: _Active, name: str) -> tuple[_Rule | None, _Active]:
    """Step every path rule over one key: the rule that ends here, and those still going."""
    matched, active = None, []
    for rule, depth in rules:
        if rule.segments[depth] not in ("*", name):
            continue
        if depth + 1 == len(rule.segments):
            matched = matched or rule
        else:
            active.append((rule, depth + 1))
    return matched, tuple(active)


def _outside(found: list[Finding], spans: list[tuple[int, int]]) -> list[Finding]:
    return [f for f in found if not any(f.start < end and start < f.end for start, end in spans)]


def _merged(found: list[Finding]) -> list[Finding]:
    """Overlapping findings become one, named after the most specific detector among them."""
    merged: list[Finding] = []
    for finding in sorted(found, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            kind = min(last.kind, finding.kind, key=_SPECIFICITY.__getitem__)
            merged[-1] = Finding(kind, last.start, max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged
