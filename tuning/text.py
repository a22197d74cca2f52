"""The few plain helpers every layer shares: an error's first line, a value clipped for a message, a URL without its
password, JSON-safe values.

They live here, at the bottom of the one-way arrows (app -> tasks -> tuning), so each exists once.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime


def one_line(err: BaseException, with_type: bool = False) -> str:
    """An error's first line (its type's name when it has no message); with_type: 'OSError: ...'."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return f"{type(err).__name__}: {lines[0]}" if with_type else lines[0]


def clip(value, limit: int = 60, as_text: bool = False) -> str:
    """A value quoted in a message (its repr; as_text: str), cut short: an error never echoes a megabyte back."""
    text = str(value) if as_text else repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def without_password(url: str) -> str:
    """A database or queue URL fit for messages and logs: redis://u:secret@h -> redis://u:***@h."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def json_safe(value):
    """Values for JSON: NaN, infinity and NaT -> None; numpy and pandas scalars -> Python; times -> ISO strings;
    mapping keys -> str. Registry results, API answers and exports all go through it."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bytes, bool)):
        return value
    if isinstance(value, (datetime, date)):  # pandas' Timestamp and NaT are datetimes too
        return None if value != value else value.isoformat()  # NaT is the one that is not equal to itself
    if hasattr(value, "item"):  # a numpy (or pandas) scalar
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    return value
