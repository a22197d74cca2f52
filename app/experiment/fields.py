"""The form's controls that a message can stand beside, and which one an error is about.

A message stands beside the control it is about (app.tabs.experiment lays out one line under each), so
a person sees what to fix where they fix it.
"""

from __future__ import annotations

from moduletune.app.public.errors import is_refusal
from moduletune.app.public.visitors import LoginRequired
from moduletune.tasks.registry import RegistryError

# The controls a message can stand beside, in the form's order, and how a message about each one begins.
FIELD_LABELS = {
    "tasks": "the tasks",
    "model": "the model",
    "families": "the module families",
    "layers": "the layers",
    "lr": "the learning rate",
    "seeds": "the seeds",
    "max_train": "the training examples",
    "max_eval": "the evaluation examples",
    "epochs": "the epochs",
    "batch_size": "the batch size",
    "settings": "the settings (More settings)",
}
FIELDS = tuple(FIELD_LABELS)


def field_of(message: str) -> str | None:
    """The control an engine message (a ConfigError, a layer-range error) is about, from its words; None when
    it names none of them."""
    text = message.lower()
    for key, fld in (
        ("training examples", "max_train"),
        ("evaluation examples", "max_eval"),
        ("epochs", "epochs"),
        ("batch size", "batch_size"),
        ("learning rate", "lr"),
        ("seed", "seeds"),
        ("layer", "layers"),
        ("task", "tasks"),
        ("module", "families"),
        ("famil", "families"),
        ("model", "model"),
    ):
        if key in text:
            return fld
    return None


def field_messages(fld: str | None, text: str) -> list[str]:
    """One message per FIELDS entry: text beside fld, blank beside the others."""
    return [text if f == fld else "" for f in FIELDS]


def error_field(err: BaseException) -> str | None:
    """The form control a refusal is about (app.form.FIELDS), or None for one about no control (a quota, the
    queue, an unexpected error): a FormError says so itself, the engine's messages by their words."""
    if not is_refusal(err) or isinstance(err, (RegistryError, LoginRequired)):
        return None
    return err.field if hasattr(err, "field") else field_of(str(err))
