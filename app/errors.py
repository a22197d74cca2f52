"""What a person is told when a request fails: our own refusals verbatim, anything else as one safe line.

A refusal (a bad value, a limit, a run in the wrong state) is a ValueError we raised with a message meant
for people. Anything else (a database error quoting its SQL, an OverflowError, a bug) is logged in full on
the server and shown as a one-line notice that names no internals.
"""

from __future__ import annotations

import logging

from moduletune.tuning.text import one_line  # noqa: F401  (app.errors.one_line)

log = logging.getLogger("moduletune.app")
MAX_MESSAGE_CHARS = 500  # a refusal quoted back to a visitor; longer ones are cut


def refusal_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(errors whose messages are written for people, their subclasses that are not), imported late."""
    from moduletune.app.form import FormError
    from moduletune.app.public import LimitError
    from moduletune.app.visitors import LoginRequired
    from moduletune.tasks.registry import RegistryError, RegistryUnavailable
    from moduletune.tuning.config import ConfigError
    from moduletune.tuning.glue import GlueError
    from moduletune.tuning.modules import ModuleSpecError
    from moduletune.tuning.verdict import SearchError

    ours = (FormError, LimitError, LoginRequired, ConfigError, GlueError, ModuleSpecError, RegistryError, SearchError)
    return ours, (RegistryUnavailable,)


def is_refusal(err: BaseException) -> bool:
    """Whether err is one of our refusals, whose message may be shown as it is."""
    ours, internal = refusal_types()
    return isinstance(err, ours) and not isinstance(err, internal)


def error_field(err: BaseException) -> str | None:
    """The form control a refusal is about (app.form.FIELDS), or None for one about no control (a quota, the
    queue, an unexpected error): a FormError says so itself, the engine's messages by their words."""
    from moduletune.app.fields import field_of
    from moduletune.app.visitors import LoginRequired
    from moduletune.tasks.registry import RegistryError

    if not is_refusal(err) or isinstance(err, (RegistryError, LoginRequired)):
        return None
    return err.field if hasattr(err, "field") else field_of(str(err))


def visitor_message(err: BaseException, action: str = "do this", detail: bool | None = None) -> str:
    """The one line a person reads for err: a refusal's own message, else a notice (the whole error goes to the
    server log). detail (default: outside public mode) adds the error's first line for the lab's own operator."""
    if is_refusal(err):
        return _clip(one_line(err))
    log.error("could not %s", action, exc_info=(type(err), err, err.__traceback__))
    if detail is None:
        from moduletune.app.public import public_limits

        detail = public_limits() is None
    why = f": {_clip(one_line(err))}" if detail else f" ({type(err).__name__})"
    return f"the server could not {action}{why}; nothing was changed (the server log has the details)"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"
