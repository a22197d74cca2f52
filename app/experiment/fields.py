"""The form's controls that a message can stand beside, and which one an error is about.

A message stands beside the control it is about (app.experiment.tab lays out one line under each), so a person sees
what to fix where they fix it. An error names its control itself: a FormError by the control, a ConfigError (or an
entry check's refusal, tasks.submission) by the RunConfig field, whose Knob says which control sets it.
"""

from __future__ import annotations

from moduletune.app.public.checks import FormError
from moduletune.app.public.errors import is_refusal
from moduletune.app.public.visitors import LoginRequired
from moduletune.tasks.registry import RegistryError
from moduletune.tuning.config import KNOBS

# The sweep's controls with a message line of their own (the Knob of task, modules, layers and seed names them).
SWEEP_LABELS = {"tasks": "the tasks", "families": "the module families", "layers": "the layers", "seeds": "the seeds"}
# The main settings typed in a box (made from their Knobs), each with its line; a checkbox or a choice has none.
BOXED = tuple(
    name
    for name, k in KNOBS.items()
    if k.form == name and name not in SWEEP_LABELS and k.kind not in ("bool", "choice")
)
# The controls a message can stand beside, and how a message about each one begins; "settings": the settings as a
# whole (More settings: the checkboxes, the choices and the Advanced inputs).
FIELD_LABELS = {
    **SWEEP_LABELS,
    **{name: f"the {KNOBS[name].title(name)}" for name in BOXED},
    "settings": "the settings (More settings)",
}
FIELDS = tuple(FIELD_LABELS)


def control_of(name: str | None) -> str | None:
    """The control beside which a message about the RunConfig field `name` stands: the one its Knob names when it
    has a line, else the settings; None for a message about no field."""
    if name is None:
        return None
    k = KNOBS.get(name)
    return k.form if k is not None and k.form in FIELD_LABELS else "settings"


def field_messages(fld: str | None, text: str) -> list[str]:
    """One message per FIELDS entry: text beside fld, blank beside the others."""
    return [text if f == fld else "" for f in FIELDS]


def error_field(err: BaseException) -> str | None:
    """The form control a refusal is about (FIELDS), or None for one about no control (a quota, the queue, an
    unexpected error): a FormError names its control, the engine's refusals their RunConfig field."""
    if not is_refusal(err) or isinstance(err, (RegistryError, LoginRequired)):
        return None
    if isinstance(err, FormError):
        return err.field
    return control_of(getattr(err, "field", None))
