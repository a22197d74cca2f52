"""Waiting on real processes: poll until a condition holds, or fail saying what never happened."""

import time
from typing import Callable


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25, logs: Callable[[], str] | None = None):
    """Poll predicate until it returns something truthy (returned); on timeout fail with `what` and logs()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{logs()}" if logs else ""))
