"""What a person is told when a request fails: our own refusals verbatim, anything else as one safe line.

A refusal (a bad value, a limit, a run in the wrong state) is a ValueError we raised with a message meant
for people. Anything else (a database error quoting its SQL, an OverflowError, a bug) is logged in full on
the server and shown as a one-line notice that names no internals.
"""

from __future__ import annotations

import logging

from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import LimitError, public_limits
from moduletune.app.public.visitors import LoginRequired
from moduletune.tasks.registry import RegistryError, RegistryUnavailable
from moduletune.tuning.config import ConfigError
from moduletune.tuning.glue import GlueError
from moduletune.tuning.modules import ModuleSpecError
from moduletune.tuning.text import clip, one_line
from moduletune.tuning.verdict import SearchError

log = logging.getLogger("moduletune.app")
MAX_MESSAGE_CHARS = 500  # a refusal quoted back to a visitor; longer ones are cut


def refusal_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(errors whose messages are written for people, their subclasses that are not), imported late."""

    ours = (FormError, LimitError, LoginRequired, ConfigError, GlueError, ModuleSpecError, RegistryError, SearchError)
    return ours, (RegistryUnavailable,)


def is_refusal(err: BaseException) -> bool:
    """Whether err is one of our refusals, whose message may be shown as it is."""
    ours, internal = refusal_types()
    return isinstance(err, ours) and not isinstance(err, internal)


def visitor_message(err: BaseException, action: str = "do this", detail: bool | None = None) -> str:
    """The one line a person reads for err: a refusal's own message, else a notice (the whole error goes to the
    server log). detail (default: outside public mode) adds the error's first line for the lab's own operator."""
    if is_refusal(err):
        return clip(one_line(err), MAX_MESSAGE_CHARS, as_text=True)
    log.error("could not %s", action, exc_info=(type(err), err, err.__traceback__))
    if detail is None:
        detail = public_limits() is None
    why = f": {clip(one_line(err), MAX_MESSAGE_CHARS, as_text=True)}" if detail else f" ({type(err).__name__})"
    return f"the server could not {action}{why}; nothing was changed (the server log has the details)"
