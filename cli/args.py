"""Argument types and flags the command groups share: whole numbers bounded to what the registry can hold, --tag."""

from __future__ import annotations

import argparse

MAX_ID = 2**31 - 1  # the registry's id columns are 32-bit integers on every database


def bounded(lo: int, hi: int, what: str):
    """An argparse type: a whole number from lo to hi, else one line saying so (never an OverflowError later)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text[:40]!r}") from None
        if not lo <= value <= hi:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise argparse.ArgumentTypeError(f"{what} must be a whole number from {lo:,} to {hi:,}, got {shown}")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


run_id = bounded(1, MAX_ID, "a run id")
study_id = bounded(1, MAX_ID, "a study id")
limit = bounded(1, MAX_ID, "a limit")


def add_tag_flags(p: argparse.ArgumentParser, help: str) -> None:
    """--tag T, repeatable (submit, sweep, and runs' filter)."""
    p.add_argument("--tag", action="append", dest="tags", default=[], metavar="TAG", help=help)
