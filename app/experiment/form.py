"""The Experiment form as plain Python: its values, the checks on their types and sizes, and what they mean.

A value of the wrong type or size (an API caller can send anything) is refused beside its field by
`checked`, before anything is computed from it. No Gradio here: app/ui.py wires these to widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moduletune.app.experiment.fields import FIELDS
from moduletune.app.public.checks import FormError
from moduletune.tuning import glue, methods, modules
from moduletune.tuning.config import DEFAULT_MODEL, KNOBS, MAX_SEED, default_lr, parse_floats
from moduletune.tuning.text import clip

TASK_NAMES = tuple(glue.TASKS)
FAMILY_LABELS = {f.name: f.label for f in modules.FAMILY_TABLE}  # the checkboxes, in the paper's order
FAMILY_CHOICES = [(label, family) for family, label in FAMILY_LABELS.items()]

# Defaults that show the paper's effect in about a minute on a CPU with the embedded MiniLM: SST-2, 2,000
# examples, 1 epoch, all layers reach ~0.77 for full fine-tuning and LayerNorm-only alike (RTE with 256
# examples left every family, full fine-tuning included, at chance).
DEFAULT_TASKS = ("sst2",)
DEFAULT_FAMILIES = ("layernorm",)
DEFAULT_LAYERS = ("0", "1", "2", "3", "4", "5")  # every layer of the embedded 6-layer model
DEFAULT_MAX_TRAIN = 2000  # a seeded, stratified sample
DEFAULT_MAX_EVAL = None  # the whole validation set (SST-2: 872 sentences)


@dataclass
class Form:
    """The Experiment tab's values, as plain Python (what the widgets hold)."""

    tasks: list = field(default_factory=lambda: list(DEFAULT_TASKS))
    model: str = DEFAULT_MODEL
    families: list = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    method: str = "modules"  # tune the families themselves, or wrap them in peft's LoRA or (IA)³ (tuning/methods.py)
    together: bool = False  # train the chosen families together in one run (else one run each)
    random_control: bool = False  # also queue random:<family> of the same size (the lottery-ticket control)
    layers: list = field(default_factory=lambda: list(DEFAULT_LAYERS))  # the layer toggles that are on
    layer_spec: str = ""  # a typed spec (0-3,5 / last:2 / each); overrides the toggles when set
    each_layer: bool = False  # one run per chosen layer instead of one run over all of them
    lr: float | None = None  # None or the shown default: each run uses its family's default
    seeds: str = "0"
    max_train: int | None = DEFAULT_MAX_TRAIN
    max_eval: int | None = DEFAULT_MAX_EVAL
    epochs: int = 1
    batch_size: int = 32
    train_head: bool = True
    prefix_cache: str = "auto"  # the frozen-prefix cache: auto, on or off (tuning/prefix.py)
    lr_search: bool = False  # search each run's lr first (successive halving on a held-out slice), then train
    lr_search_scope: str = "setting"  # one search per setting, or per task and family on all layers (app.plan)
    baselines: bool = False  # the preset also queues LoRA r=8 on Q+V and (IA)³ on K+V+FO, on all layers
    advanced: dict = field(default_factory=dict)  # Advanced settings: RunConfig field -> value (blank: its default)


# What each form value may be, checked before anything is computed from it: a wrong type or an oversize
# value (an API caller can send anything) is refused beside its field, never reaching int() or a database.
MAX_LIST_ITEMS = {"tasks": 20, "families": 32, "layers": 1000}
MAX_TEXT_CHARS = {
    "model": 300,
    "layer_spec": 200,
    "seeds": 500,
    "lr": 40,
    "max_train": 20,
    "max_eval": 20,
    "epochs": 20,
    "batch_size": 20,
    "lr_search_scope": 20,
    "method": 20,
}
FLAGS = ("together", "random_control", "each_layer", "train_head", "lr_search", "baselines")
# The form's method choice: the families themselves, or peft's adapter on them (their rank and alpha: Advanced).
METHOD_CHOICES = ("modules", *methods.METHOD)
PREFIX_CHOICES = ("auto", "on", "off")
# The settings the form's Advanced section sets, each an input made from its Knob (tuning/config.py).
ADVANCED = tuple(name for name, k in KNOBS.items() if k.form == "advanced")
# Which control a form value's type or size error stands beside (the rest: the settings).
CONTROL_OF = {name: name for name in FIELDS} | {"layer_spec": "layers"}


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
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > limit:
            raise FormError(
                CONTROL_OF.get(name, "settings"),
                f"{name.replace('_', ' ')} must be a number or text of at most {limit} characters, got {clip(value)}",
            )
    for name in FLAGS:
        if not isinstance(getattr(form, name), bool):
            raise FormError(
                "settings", f"{name.replace('_', ' ')} must be true or false, got {clip(getattr(form, name))}"
            )
    extra = form.advanced
    if (
        not isinstance(extra, dict)
        or len(extra) > len(ADVANCED)
        or not all(
            k in ADVANCED and (v is None or isinstance(v, (str, int, float, bool)) and len(str(v)) <= 1000)
            for k, v in extra.items()
        )
    ):
        raise FormError(
            "settings",
            f"advanced settings are a mapping of {', '.join(ADVANCED)} to numbers or short text, got {clip(extra)}",
        )
    if form.method not in METHOD_CHOICES:
        raise FormError("families", f"method must be one of {', '.join(METHOD_CHOICES)}, got {clip(form.method)}")
    if form.prefix_cache not in PREFIX_CHOICES:
        raise FormError(
            "settings", f"prefix cache must be one of {', '.join(PREFIX_CHOICES)}, got {clip(form.prefix_cache)}"
        )
    return form


def whole(value, label: str, lo: int, hi: int, default: int, fld: str = "settings") -> int:
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


def optional_count(value, label: str, fld: str) -> int | None:
    """Subsample sizes: empty or 0 means the whole split."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return whole(value, f"{label} (0 = the whole split)", 0, 10**9, 0, fld) or None


def advanced_settings(form: Form) -> dict:
    """The Advanced section as RunConfig values (a blank keeps the default); FormError('settings') otherwise.

    Only the conversions a form needs happen here (a number box gives 2.0 for 2, a text box '1e-3,1e-2');
    the ranges are the RunConfig's own, checked when the configs are built."""
    out = {}
    for name, value in (form.advanced or {}).items():
        k = KNOBS[name]
        label = k.label or name.replace("_", " ")
        if value is None or isinstance(value, str) and not value.strip():
            continue
        if k.kind == "int":
            value = whole(value, label, *k.bounds, None) if not (k.optional and value in (0, "0")) else None
        elif k.kind == "number":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise FormError("settings", f"{label} must be {k.allowed[1]}, got {clip(value)}") from None
        elif k.kind == "floats":
            try:
                value = parse_floats(value)
            except ValueError:
                raise FormError(
                    "settings", f"{label}: comma-separated numbers such as 1e-4,1e-3,1e-2, got {clip(value)}"
                ) from None
        out[name] = value
    return out


FORM_FIELDS = (
    "tasks",
    "model",
    "families",
    "method",
    "together",
    "random_control",
    "layers",
    "layer_spec",
    "each_layer",
    "lr",
    "seeds",
    "max_train",
    "max_eval",
    "epochs",
    "batch_size",
    "train_head",
    "prefix_cache",
    "lr_search",
    "lr_search_scope",
    "baselines",
)
# Every value the form sends, by name: the main controls, then the Advanced settings made from their Knobs.
FORM_PARAMS = FORM_FIELDS + ADVANCED


def form_of(values: dict) -> Form:
    """The Form for a mapping of form parameter names to values."""
    main = {name: values[name] for name in FORM_FIELDS if name in values}
    return Form(**main, advanced={name: values[name] for name in ADVANCED if name in values})
