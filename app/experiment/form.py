"""The Experiment form as plain Python: its values, the checks on their types and sizes, and what they mean.

The sweep's controls are declared here; the settings are the RunConfig's, each made from its Knob (its label, its
form's default, what 0 means). A value of the wrong type or size (an API caller can send anything) is refused beside
its field by `checked`, before anything is computed from it. No Gradio here: tab.py wires these to widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from moduletune.app.experiment.fields import FIELDS, control_of
from moduletune.app.public.checks import FormError
from moduletune.tuning import glue, methods, modules
from moduletune.tuning.config import KNOBS, MAX_SEED, engine_default, form_default, parse_floats
from moduletune.tuning.learning_rates import default_lr
from moduletune.tuning.text import clip

TASK_NAMES = tuple(glue.TASKS)
FAMILY_LABELS = {f.name: f.label for f in modules.FAMILY_TABLE}  # the checkboxes, in the paper's order
FAMILY_CHOICES = [(label, family) for family, label in FAMILY_LABELS.items()]

DEFAULT_TASKS = (engine_default("task"),)
DEFAULT_FAMILIES = engine_default("modules")
DEFAULT_LAYERS = ("0", "1", "2", "3", "4", "5")  # every layer of the embedded 6-layer model

# The sweep's controls, kept by hand (what multiplies into runs, and how), with their defaults.
SWEEP_DEFAULTS = {
    "tasks": DEFAULT_TASKS,
    "families": DEFAULT_FAMILIES,
    "method": "modules",  # tune the families themselves, or wrap them in peft's LoRA or (IA)³ (tuning/methods.py)
    "together": False,  # train the chosen families together in one run (else one run each)
    "random_control": False,  # also queue random:<family> of the same size (the lottery-ticket control)
    "layers": DEFAULT_LAYERS,  # the layer toggles that are on
    "layer_spec": "",  # a typed spec (0-3,5 / last:2 / each); overrides the toggles when set
    "each_layer": False,  # one run per chosen layer instead of one run over all of them
    "seeds": "0",
    "lr_search_scope": "setting",  # one search per setting, or per task and family on all layers (app.experiment.plan)
    "baselines": False,  # the preset also queues LoRA r=8 on Q+V and (IA)³ on K+V+FO, on all layers
}
SWEEP = tuple(SWEEP_DEFAULTS)
# The settings made from their Knobs (tuning/config.py): the main ones (a Knob whose form entry is its own name, but
# for the sweep's layers), then those of the Advanced section.
MAIN = tuple(name for name, k in KNOBS.items() if k.form == name and name not in SWEEP)
ADVANCED = tuple(name for name, k in KNOBS.items() if k.form == "advanced")
SETTINGS = MAIN + ADVANCED
# Every value the form sends, by name: the sweep's controls and the main settings, then the Advanced settings.
FORM_FIELDS = SWEEP + MAIN
FORM_PARAMS = FORM_FIELDS + ADVANCED


@dataclass(init=False)
class Form:
    """The Experiment tab's values, as plain Python (what the widgets hold): the sweep's controls by name, and every
    setting made from a Knob in `settings` (RunConfig field -> the value its control holds; absent: the form's
    default), read as form.epochs."""

    tasks: list
    families: list
    method: str
    together: bool
    random_control: bool
    layers: list
    layer_spec: str
    each_layer: bool
    seeds: str
    lr_search_scope: str
    baselines: bool
    settings: dict

    def __init__(self, advanced: dict | None = None, **values):
        """Form(tasks=["rte"], epochs=2, advanced={"warmup_ratio": 0.2}): the sweep's controls and the settings
        by name (the Advanced section may come as one mapping); a name the form lacks is kept with the settings,
        where `checked` refuses it."""
        for name, default in SWEEP_DEFAULTS.items():
            value = values.pop(name) if name in values else default
            setattr(self, name, list(value) if isinstance(value, tuple) else value)
        self.settings = {**values, **(advanced or {})}

    def __getattr__(self, name: str) -> Any:
        """A setting's value as its control holds it (the form's default when the form did not send it)."""
        if name in SETTINGS:
            return self.__dict__.get("settings", {}).get(name, form_default(name))
        raise AttributeError(name)

    def replace(self, **changes) -> Form:
        """This form with some values changed (sweep controls or settings, by name)."""
        return Form(**{**{n: getattr(self, n) for n in SWEEP}, **self.settings, **changes})


# What each sweep value may be, checked before anything is computed from it: a wrong type or an oversize value (an
# API caller can send anything) is refused beside its field, never reaching int() or a database.
MAX_LIST_ITEMS = {"tasks": 20, "families": 32, "layers": 1000}
MAX_TEXT_CHARS = {"layer_spec": 200, "seeds": 500, "lr_search_scope": 20, "method": 20}
MAX_SETTING_CHARS = 1000  # a setting's value as text, where its Knob sets no limit
FLAGS = ("together", "random_control", "each_layer", "baselines")
# The form's method choice: the families themselves, or peft's adapter on them (their rank and alpha: Advanced).
METHOD_CHOICES = ("modules", *methods.METHOD)
# Which control a sweep value's type or size error stands beside.
CONTROL_OF = {name: name for name in FIELDS} | {"layer_spec": "layers", "method": "families"}


def checked(form: Form) -> Form:
    """The form if every value has an allowed type and size; FormError beside the field otherwise."""
    for name, limit in MAX_LIST_ITEMS.items():
        value = getattr(form, name)
        if value is None or isinstance(value, str) and name == "tasks":
            continue
        if (
            not isinstance(value, (list, tuple))
            or len(value) > limit
            or not all(isinstance(v, (str, int)) and not isinstance(v, bool) and len(str(v)) <= 64 for v in value)
        ):
            raise FormError(
                CONTROL_OF.get(name, "settings"),
                f"{name.replace('_', ' ')} must be a list of at most {limit} names, got {clip(value)}",
            )
    for name, limit in MAX_TEXT_CHARS.items():
        value = getattr(form, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > limit
        ):
            raise FormError(
                CONTROL_OF.get(name, "settings"),
                f"{name.replace('_', ' ')} must be a number or text of at most {limit} characters, got {clip(value)}",
            )
    for name in FLAGS:
        if not isinstance(getattr(form, name), bool):
            raise FormError(
                "settings", f"{name.replace('_', ' ')} must be true or false, got {clip(getattr(form, name))}"
            )
    if form.method not in METHOD_CHOICES:
        raise FormError("families", f"method must be one of {', '.join(METHOD_CHOICES)}, got {clip(form.method)}")
    checked_settings(form.settings)
    return form


def checked_settings(settings) -> None:
    """Each setting's value of an allowed type and size (a checkbox's a bool, a choice one of its Knob's choices,
    the rest blank, a number or short text); FormError beside its control otherwise."""
    if not isinstance(settings, dict) or not all(name in SETTINGS for name in settings):
        raise FormError(
            "settings",
            f"advanced settings are a mapping of {', '.join(ADVANCED)} to numbers or short text, got {clip(settings)}",
        )
    for name, value in settings.items():
        k, label = KNOBS[name], KNOBS[name].title(name)
        if k.kind == "bool" and not isinstance(value, bool):
            raise FormError(control_of(name), f"{label} must be true or false, got {clip(value)}")
        if k.kind == "choice" and value not in k.choices:
            raise FormError(control_of(name), f"{label} must be one of {', '.join(k.choices)}, got {clip(value)}")
        limit = k.limit or MAX_SETTING_CHARS
        if value is not None and (
            isinstance(value, bool) is not (k.kind == "bool")
            or not isinstance(value, (str, int, float))
            or len(str(value)) > limit
        ):
            raise FormError(
                control_of(name), f"{label} must be a number or text of at most {limit} characters, got {clip(value)}"
            )


def whole(value, label: str, lo: int, hi: int, default: int | None, fld: str | None = "settings") -> int | None:
    """An integer setting from a number box (1, 1.0 or '1'); FormError(fld) naming the range otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or not lo <= number <= hi:
        raise FormError(fld, f"{label} must be a whole number from {lo:,} to {hi:,}, got {clip(value)}")
    return int(number)


def layer_toggle_choices(num_layers: int) -> list[tuple[str, str]]:
    """One toggle per layer of the model: ('0', '0') ... ('L-1', 'L-1')."""
    return [(str(i), str(i)) for i in range(int(num_layers))]


def first_layers(k, num_layers: int) -> list[str]:
    """The toggles that 'first k' turns on (k clipped to the model's depth)."""
    k = max(0, min(int(k or 0), num_layers))
    return [str(i) for i in range(k)]


def last_layers(k, num_layers: int) -> list[str]:
    """The toggles that 'last k' turns on (k clipped to the model's depth)."""
    k = max(0, min(int(k or 0), num_layers))
    return [str(i) for i in range(num_layers - k, num_layers)]


def compact_spec(layers, num_layers: int) -> str:
    """Layer indices as the shortest spec: every layer -> 'all', [0, 1, 2, 5] -> '0-2,5'."""
    ids = sorted({int(i) for i in layers})
    if ids == list(range(num_layers)):
        return "all"
    parts, start = [], None
    for i, cur in enumerate(ids):
        if start is None:
            start = cur
        if i + 1 == len(ids) or ids[i + 1] != cur + 1:
            parts.append(str(start) if start == cur else f"{start}-{cur}")
            start = None
    return ",".join(parts)


def chosen_layers(form: Form, num_layers: int) -> tuple[tuple[int, ...], bool]:
    """(layer indices, each layer separately) from the toggles or the typed spec; FormError('layers') if bad."""
    typed = str(form.layer_spec or "").strip().lower().replace(" ", "")
    each = bool(form.each_layer)
    if typed == "each":
        typed, each = "all", True
    if typed:
        try:
            ids = modules.parse_layers(typed, num_layers)
        except ValueError as err:
            raise FormError("layers", str(err)) from None
    else:
        try:
            ids = tuple(sorted({int(str(v).strip()) for v in (form.layers or [])}))
        except ValueError:
            raise FormError("layers", f"layer toggles must be numbers 0-{num_layers - 1}") from None
        bad = [i for i in ids if not 0 <= i < num_layers]
        if bad:
            raise FormError("layers", f"layer {bad[0]} is out of range: this model has layers 0-{num_layers - 1}")
    if not ids:
        raise FormError(
            "layers",
            f"Pick at least one layer (this model has layers 0-{num_layers - 1}), "
            "or type a spec such as all, 5, 0-2 or last:2",
        )
    return ids, each


def parse_seeds(text) -> list[int]:
    """'0' or '0, 1, 2' -> [0, 1, 2]; FormError('seeds') otherwise."""
    parts = [p.strip() for p in str(text if text is not None else "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise FormError("seeds", "give at least one seed, e.g. 0 or 0,1,2")

    seeds = []
    for p in parts:
        if not p.isdigit() or int(p) > MAX_SEED:
            raise FormError(
                "seeds", f"seeds are whole numbers from 0 to {MAX_SEED:,} separated by commas, got {clip(p)}"
            )
        seeds.append(int(p))
    return list(dict.fromkeys(seeds))


def form_families(form: Form) -> tuple[str, ...]:
    if not form.families:
        raise FormError("families", "Pick at least one module family")
    if form.method != "modules" and form.random_control:
        raise FormError("families", f"random controls are for module families, not {form.method}: untick one")
    prefix = "" if form.method == "modules" else f"{form.method}:"
    try:
        return modules.parse_families([prefix + str(f) for f in form.families])
    except ValueError as err:
        raise FormError("families", str(err)) from None


def form_tasks(form: Form) -> list[str]:
    tasks = [form.tasks] if isinstance(form.tasks, str) else list(form.tasks or [])
    if not tasks:
        raise FormError("tasks", f"Pick at least one GLUE task ({', '.join(TASK_NAMES)})")
    try:
        return list(dict.fromkeys(glue.get_task(t).name for t in tasks))
    except ValueError as err:
        raise FormError("tasks", str(err)) from None


def lr_default(families) -> float | None:
    """The learning rate the form shows for these families (the most conservative default among them)."""
    try:
        return default_lr(list(families)) if families else None
    except ValueError:
        return None


def lr_hint(families) -> str:
    """'default for LN: 1e-2' (each chosen family's or method's default, in the paper's short names: lora:Q: 3e-3)."""
    found = {}
    for f in families or []:
        try:
            found[modules.short_label((f,))] = default_lr([f])
        except ValueError:  # not a family (yet): the hint names none for it
            continue
    if not found:
        return "Learning rate; small modules need larger steps (default for LN: 1e-2, Q: 3e-4, full: 5e-5)"
    parts = [f"{name}: {sci(lr)}" for name, lr in found.items()]
    tail = " (each run uses its own family's default unless you change this)" if len(set(found.values())) > 1 else ""
    return "default for " + ", ".join(parts) + tail


def sci(x: float) -> str:
    """1e-2, 3e-4, 5e-5: the way learning rates are written."""
    mantissa, exp = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def resolve_lr(lr, families) -> float | None:
    """None (per-family defaults) when the box is empty or still shows the default; else the typed value."""
    if lr is None or (isinstance(lr, str) and not lr.strip()):
        return None
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise FormError("lr", f"learning rate must be a number in (0, 1], got {lr!r}") from None
    if not (0 < value <= 1) or math.isnan(value):
        raise FormError("lr", f"learning rate must be a number in (0, 1], got {lr!r}")
    shown = lr_default(families)
    if shown is not None and math.isclose(value, shown, rel_tol=1e-6):
        return None
    return value


def setting_values(form: Form) -> dict:
    """Every setting as the RunConfig value its control holds (a blank: the engine's default); the learning rate as
    the form means it (resolve_lr; none with an lr search, which chooses it). FormError beside the control when a
    value cannot be one; the ranges are the RunConfig's own, checked when the configs are made."""
    out = {name: setting_value(name, getattr(form, name)) for name in SETTINGS if name != "lr"}
    out["lr"] = None if out["lr_search"] else resolve_lr(form.lr, form_families(form))
    return out


def setting_value(name: str, value):
    """One setting from its control (a number box gives 2.0 for 2, a text box '1e-3,1e-2'); an optional int's 0 and
    a blank are the engine's default."""
    k, fld, label = KNOBS[name], control_of(name), KNOBS[name].title(name)
    if value is None or isinstance(value, str) and not value.strip():
        return engine_default(name)
    if k.kind == "int":
        lo, hi = k.bounds or (0, 0)
        if k.optional:
            return whole(value, f"{label} (0 = {k.zero})", 0, hi, None, fld) or None
        return whole(value, label, lo, hi, None, fld)
    if k.kind == "number":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FormError(fld, f"{label} must be {k.allowed[1]}, got {clip(value)}") from None
    if k.kind == "floats":
        try:
            return parse_floats(value)
        except ValueError:
            raise FormError(
                fld, f"{label}: comma-separated numbers such as 1e-4,1e-3,1e-2, got {clip(value)}"
            ) from None
    if k.kind == "model":
        return str(value).strip()
    return value


def form_of(values: dict) -> Form:
    """The Form for a mapping of form parameter names to values."""
    return Form(**values)
