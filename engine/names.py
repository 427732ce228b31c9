"""Validation of names that end up inside Redis keys."""

from __future__ import annotations

import re

from engine.errors import InvalidName

MAX_NAME_LENGTH = 128

# Letters, digits and . _ - : only: no braces (they would move a key to another cluster
# slot), no whitespace or control characters, no slash (event ids are "<queue>/<id>").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")


def check_name(kind: str, value: object) -> str:
    """Return `value` if it is a safe queue, lane, task or job id name, else raise."""
    if not isinstance(value, str):
        msg = f"{kind} name must be a string, got {type(value).__name__}"
        raise InvalidName(msg)
    if not value:
        msg = f"{kind} name is empty"
        raise InvalidName(msg)
    if len(value) > MAX_NAME_LENGTH:
        msg = f"{kind} name is {len(value)} characters long, the limit is {MAX_NAME_LENGTH}"
        raise InvalidName(msg)
    if not _NAME.fullmatch(value):
        msg = (
            f"{kind} name {value!r} is not allowed: use letters, digits and . _ - : "
            "(starting with a letter or digit); braces, slashes, whitespace and control "
            "characters would break the key layout"
        )
        raise InvalidName(msg)
    return value
