"""What every request is checked for before it reaches the registry: a run id, and the refusal beside a control.

FormError carries the control it is about, so a message stands beside what to fix; every room raises it.
"""

from __future__ import annotations

import math

from moduletune.tuning.text import clip


class FormError(ValueError):
    """A form value that cannot be honoured; `field` says which control (FIELDS) the message belongs beside, None
    when it is about the selection as a whole (too many runs)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


MAX_RUN_ID = 2**31 - 1  # the registry's id column is a 32-bit integer on every database


def run_id_of(value) -> int:
    """A run id from a dropdown, a table or an API call (12, 12.0 or '12'); FormError('run') otherwise."""
    try:
        number = float(str(value).strip().lstrip("#")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number) or not 1 <= number <= MAX_RUN_ID:
        raise FormError("run", f"a run id is a whole number from 1 to {MAX_RUN_ID:,}, got {clip(value)}")
    return int(number)
