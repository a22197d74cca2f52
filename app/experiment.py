"""The Experiment tab's logic: form values -> validated RunConfigs, live counts, the paper-study preset.

No Gradio here: app/ui.py wires these functions to widgets, and tests call them directly. Every
submission, cancel and retry from the UI goes through submit_runs / cancel_run / retry_run, so
public mode's limits (app.public) apply there: `allow` (the quotas: who, what, how many) and `vet`
(what the action touches: caps, the model allow-list, whose run it is). Public mode is process-wide (one
server serves one app): `set_public(limits, registry)` turns it on, `set_public(None)` off.
"""
from __future__ import annotations

import contextlib
import math
import threading
import uuid
from dataclasses import dataclass, field, replace

from app import public
from tuning import glue, modules
from tuning.config import DEFAULT_LR, DEFAULT_MODEL, KNOBS, ConfigError, RunConfig, default_lr

TASK_NAMES = tuple(glue.TASKS)
FAMILY_LABELS = {f.name: f.label for f in modules.FAMILY_TABLE}  # the checkboxes, in the paper's order
FAMILY_CHOICES = [(label, family) for family, label in FAMILY_LABELS.items()]
PAPER_FAMILIES = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm")
FORM_LIMIT = 200  # runs one click of Submit may queue; larger studies go through the preset
PRESET_LIMIT = 5000  # the paper-study preset, after its confirmation

# Defaults that show the paper's effect in about a minute on a CPU with the embedded MiniLM: SST-2, 2,000
# examples, 1 epoch, all layers reach ~0.77 for full fine-tuning and LayerNorm-only alike (RTE with 256
# examples left every family, full fine-tuning included, at chance).
DEFAULT_TASKS = ("sst2",)
DEFAULT_FAMILIES = ("layernorm",)
DEFAULT_LAYERS = ("0", "1", "2", "3", "4", "5")  # every layer of the embedded 6-layer model
DEFAULT_MAX_TRAIN = 2000  # a seeded, stratified sample
DEFAULT_MAX_EVAL = None  # the whole validation set (SST-2: 872 sentences)


class FormError(ValueError):
    """A form value that cannot be honoured; `field` says which control the message belongs beside."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class Form:
    """The Experiment tab's values, as plain Python (what the widgets hold)."""

    tasks: list = field(default_factory=lambda: list(DEFAULT_TASKS))
    model: str = DEFAULT_MODEL
    families: list = field(default_factory=lambda: list(DEFAULT_FAMILIES))
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
    advanced: dict = field(default_factory=dict)  # Advanced settings: RunConfig field -> value (blank: its default)


# What each form value may be, checked before anything is computed from it: a wrong type or an oversize
# value (an API caller can send anything) is refused beside its field, never reaching int() or a database.
MAX_LIST_ITEMS = {"tasks": 20, "families": 32, "layers": 1000}
MAX_TEXT_CHARS = {"model": 300, "layer_spec": 200, "seeds": 500, "lr": 40, "max_train": 20, "max_eval": 20,
                  "epochs": 20, "batch_size": 20}
FLAGS = ("together", "random_control", "each_layer", "train_head", "lr_search")
PREFIX_CHOICES = ("auto", "on", "off")
# The settings the form's Advanced section sets, each an input made from its Knob (tuning/config.py).
ADVANCED = tuple(name for name, k in KNOBS.items() if k.form == "advanced")
FIELD_LABELS = {"tasks": "tasks", "model": "model", "families": "families", "layers": "layers",
                "layer_spec": "layers", "seeds": "seeds", "lr": "lr"}


def checked(form: Form) -> Form:
    """The form if every value has an allowed type and size; FormError beside the field otherwise."""
    for name, limit in MAX_LIST_ITEMS.items():
        value = getattr(form, name)
        if value is None or isinstance(value, str) and name == "tasks":
            continue
        if not isinstance(value, (list, tuple)) or len(value) > limit or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) and len(str(v)) <= 64 for v in value):
            raise FormError(FIELD_LABELS.get(name, "settings"),
                            f"{name.replace('_', ' ')} must be a list of at most {limit} names, got {_clip(value)}")
    for name, limit in MAX_TEXT_CHARS.items():
        value = getattr(form, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > limit:
            raise FormError(FIELD_LABELS.get(name, "settings"), f"{name.replace('_', ' ')} must be a number or text "
                                                                f"of at most {limit} characters, got {_clip(value)}")
    for name in FLAGS:
        if not isinstance(getattr(form, name), bool):
            raise FormError("settings", f"{name.replace('_', ' ')} must be true or false, got "
                                        f"{_clip(getattr(form, name))}")
    extra = form.advanced
    if not isinstance(extra, dict) or len(extra) > len(ADVANCED) or not all(
            k in ADVANCED and (v is None or isinstance(v, (str, int, float, bool)) and len(str(v)) <= 1000)
            for k, v in extra.items()):
        raise FormError("settings", f"advanced settings are a mapping of {', '.join(ADVANCED)} to numbers or short "
                                    f"text, got {_clip(extra)}")
    if form.prefix_cache not in PREFIX_CHOICES:
        raise FormError("settings", f"prefix cache must be one of {', '.join(PREFIX_CHOICES)}, "
                                    f"got {_clip(form.prefix_cache)}")
    return form


def _clip(value, limit: int = 60) -> str:
    """A value quoted in a message, cut short: an error never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def _whole(value, label: str, lo: int, hi: int, default: int) -> int:
    """An integer setting from a number box (1, 1.0 or '1'); FormError('settings') naming the range otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or not lo <= number <= hi:
        raise FormError("settings", f"{label} must be a whole number from {lo:,} to {hi:,}, got {_clip(value)}")
    return int(number)


# ---------------------------------------------------------------------------------------------- public mode

@dataclass(frozen=True)
class PublicMode:
    """Public mode's limits and the registry whose queue its quotas count."""

    limits: "public.PublicLimits"
    registry: object


_PUBLIC: PublicMode | None = None  # set by build_app (serve --public); None: an open lab
_GATE = threading.Lock()  # public mode: check a visitor's quota and queue the runs as one step


def set_public(limits: "public.PublicLimits | None", registry=None) -> None:
    """Public mode on (these limits, quotas counted in `registry`, default Registry()) or off (None)."""
    global _PUBLIC
    if limits is None:
        _PUBLIC = None
        return
    if registry is None:
        from tasks.registry import Registry

        registry = Registry()
    _PUBLIC = PublicMode(limits, registry)


def public_limits() -> "public.PublicLimits | None":
    """The limits in force, or None outside public mode."""
    return _PUBLIC.limits if _PUBLIC is not None else None


def guard_model(name) -> None:
    """In public mode, refuse a model that is not allow-listed before anything reads it (FormError('model'))."""
    limits = public_limits()
    if limits is None:
        return
    try:
        public.check_model(limits, name)
    except public.LimitError as err:
        raise FormError("model", str(err)) from None


# ---------------------------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_type: str
    num_layers: int


_LOCK = threading.Lock()
_MODEL_INFO: dict[str, ModelInfo] = {}
_META_MODELS: dict[tuple, object] = {}
_COUNTS: dict[tuple, dict] = {}


def model_name(text) -> str:
    """The model field's text, or the embedded default when it is blank."""
    return (str(text).strip() if text else "") or DEFAULT_MODEL


def model_info(name) -> ModelInfo:
    """Depth and architecture of a model from its config alone (cached per name); FormError('model') if unusable."""
    name = model_name(name)
    guard_model(name)  # public mode: a typed name or path is refused before it is looked up
    with _LOCK:
        if name in _MODEL_INFO:
            return _MODEL_INFO[name]
    from tuning.models import load_config

    try:
        config = load_config(name)
        arch_type = config.model_type
        modules.architecture_for(arch_type)
        info = ModelInfo(name, arch_type, modules.num_hidden_layers(config))
    except (ValueError, OSError) as err:
        raise FormError("model", f"{name}: {_one_line(err)}") from None
    with _LOCK:
        _MODEL_INFO[name] = info
    return info


def _meta_model(name: str, num_labels: int):
    """The model built on the meta device (no memory, no weights): enough to count parameters."""
    key = (name, num_labels)
    with _LOCK:
        if key in _META_MODELS:
            return _META_MODELS[key]
    from tuning.models import build_from_config, load_config

    model = build_from_config(load_config(name), num_labels=num_labels, on_meta=True)
    with _LOCK:
        _META_MODELS[key] = model
    return model


def counts(model: str, task: str, families, layers: str, train_head: bool = True) -> dict:
    """Exact trainable-parameter counts of one run (module, head, total, percentages); cached."""
    fams = modules.parse_families(families)
    key = (model_name(model), glue.get_task(task).num_labels, fams, layers, bool(train_head))
    with _LOCK:
        if key in _COUNTS:
            return _COUNTS[key]
    meta = _meta_model(key[0], key[1])
    found = modules.select_parameters(meta, fams, layers, train_head, 0).counts()
    with _LOCK:
        _COUNTS[key] = found
    return found


# ---------------------------------------------------------------------------------------------- form values

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
        raise FormError("layers", f"Pick at least one layer (this model has layers 0-{num_layers - 1}), "
                                  "or type a spec such as all, 5, 0-2 or last:2")
    return ids, each


def parse_seeds(text) -> list[int]:
    """'0' or '0, 1, 2' -> [0, 1, 2]; FormError('seeds') otherwise."""
    parts = [p.strip() for p in str(text if text is not None else "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise FormError("seeds", "give at least one seed, e.g. 0 or 0,1,2")
    from tuning.config import MAX_SEED

    seeds = []
    for p in parts:
        if not p.isdigit() or int(p) > MAX_SEED:
            raise FormError("seeds", f"seeds are whole numbers from 0 to {MAX_SEED:,} separated by commas, "
                                     f"got {_clip(p)}")
        seeds.append(int(p))
    return list(dict.fromkeys(seeds))


def _families(form: Form) -> tuple[str, ...]:
    if not form.families:
        raise FormError("families", "Pick at least one module family")
    try:
        return modules.parse_families(list(form.families))
    except ValueError as err:
        raise FormError("families", str(err)) from None


def _tasks(form: Form) -> list[str]:
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
    """'default for LN: 1e-2' (each chosen family's default, in the paper's short names)."""
    fams = [f for f in (families or []) if f in DEFAULT_LR]
    if not fams:
        return "Learning rate; small modules need larger steps (default for LN: 1e-2, Q: 3e-4, full: 5e-5)"
    parts = [f"{modules.SHORT_NAMES[f]}: {_sci(DEFAULT_LR[f])}" for f in fams]
    tail = " (each run uses its own family's default unless you change this)" if len(set(
        DEFAULT_LR[f] for f in fams)) > 1 else ""
    return "default for " + ", ".join(parts) + tail


def _sci(x: float) -> str:
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


def _optional_count(value, label: str) -> int | None:
    """Subsample sizes: empty or 0 means the whole split."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _whole(value, f"{label} (0 = the whole split)", 0, 10**9, 0) or None


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
            value = _whole(value, label, *k.bounds, None)
        elif k.kind == "number":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise FormError("settings", f"{label} must be {k.allowed[1]}, got {_clip(value)}") from None
        elif k.kind == "floats":
            try:
                value = tuple(float(v) for v in str(value).split(",") if v.strip())
            except ValueError:
                raise FormError("settings", f"{label}: comma-separated numbers such as 1e-4,1e-3,1e-2, got "
                                            f"{_clip(value)}") from None
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------- the sweep

@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep before it is validated: what varies across the sweep."""

    task: str
    modules: tuple[str, ...]
    layers: str
    seed: int


def module_sets(form: Form, families: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One set per run: each family alone, or all together; plus random controls if asked."""
    sets = [families] if form.together else [(f,) for f in families]
    if form.random_control:
        sets += [(f"random:{f}",) for f in families if f in modules.LAYER_FAMILIES]
    return list(dict.fromkeys(sets))


def _layer_wise(module_set) -> bool:
    return any(f.split(":")[-1] in modules.LAYER_FAMILIES for f in module_set)


@dataclass(frozen=True)
class Shape:
    """A sweep before it is expanded: its parts, and how many runs they multiply into."""

    tasks: list
    sets: list
    specs: list
    seeds: list

    @property
    def runs(self) -> int:
        per_task = sum(len(self.specs) if _layer_wise(s) else 1 for s in self.sets)
        return len(self.tasks) * per_task * len(self.seeds)


def shape(form: Form) -> Shape:
    """The sweep's parts from the form (cheap: nothing is multiplied out); FormError names the field at fault."""
    checked(form)
    tasks = _tasks(form)
    families = _families(form)
    info = model_info(form.model)
    seeds = parse_seeds(form.seeds)
    sets = module_sets(form, families)
    specs = ["all"]
    if any(_layer_wise(s) for s in sets):
        ids, each = chosen_layers(form, info.num_layers)
        specs = [str(i) for i in ids] if each else [compact_spec(ids, info.num_layers)]
    return Shape(tasks, sets, specs, seeds)


def plan(form: Form, limit: int | None = FORM_LIMIT) -> list[PlannedRun]:
    """The sweep: tasks x module sets x layer choices x seeds (families that ignore layers get one run).

    The runs are counted before they are listed: a selection over `limit` is refused without expanding it."""
    found = shape(form)
    if limit is not None and found.runs > limit:
        raise FormError("settings", too_many(found.runs, limit))
    return sweep_points(found.tasks, found.sets, found.specs, found.seeds)


def too_many(n: int, limit: int) -> str:
    """The refusal of a selection that is too large, with the way out."""
    if limit == FORM_LIMIT:
        return (f"this selection would queue {n:,} runs, more than {FORM_LIMIT}; narrow the tasks, families, "
                "layers or seeds, or use the paper-study preset")
    return f"this would queue {n:,} runs, more than {limit:,}; choose fewer tasks or seeds"


def sweep_points(tasks, sets, specs, seeds) -> list[PlannedRun]:
    """tasks x module sets x layer specs x seeds, for the UI and the CLI alike; a set whose families
    ignore layers (embeddings, classifier, full) gets one run over "all" instead of one per spec."""
    return [PlannedRun(task, tuple(s), spec, seed)
            for task in tasks for s in sets for spec in (specs if _layer_wise(s) else ["all"]) for seed in seeds]


def to_configs(form: Form, planned: list[PlannedRun]) -> list[RunConfig]:
    """Validated RunConfigs for planned runs with the form's settings; FormError names the control at fault.

    With lr search on, the typed lr is ignored (the search chooses it) and the configs are search configs."""
    lr = None if form.lr_search else resolve_lr(form.lr, _families(form))
    max_train = _optional_count(form.max_train, "training examples")
    max_eval = _optional_count(form.max_eval, "evaluation examples")
    epochs = _whole(form.epochs, "epochs", *KNOBS["epochs"].bounds, 1)
    batch_size = _whole(form.batch_size, "batch size", *KNOBS["batch_size"].bounds, 32)
    advanced = advanced_settings(form)
    out = []
    for p in planned:
        try:
            out.append(RunConfig(
                task=p.task, modules=p.modules, layers=p.layers, model=model_name(form.model),
                train_head=form.train_head, epochs=epochs, lr=lr,
                batch_size=batch_size, seed=p.seed, max_train=max_train, max_eval=max_eval,
                prefix_cache=form.prefix_cache or "auto", lr_search=bool(form.lr_search), **advanced))
        except ConfigError as err:
            raise FormError(_field_of(str(err)), str(err)) from None
        except (TypeError, ValueError) as err:
            raise FormError("settings", _one_line(err)) from None
    return out


def build_configs(form: Form) -> list[RunConfig]:
    """The form's runs as validated RunConfigs (one per sweep point; with lr search, one search per point
    over every seed)."""
    return search_configs(to_configs(form, plan(form)))


def search_configs(configs: list[RunConfig]) -> list[RunConfig]:
    """Search configs grouped over seeds: one search per setting (at the first seed), whose chosen lr then
    trains every seed (extra["final_seeds"]); plain configs pass through unchanged."""
    groups: dict[object, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(c.replace(seed=0).to_json() if c.lr_search else id(c), []).append(c)
    return [g[0].replace(extra={**g[0].extra, "final_seeds": [c.seed for c in g]}) if g[0].lr_search else g[0]
            for g in groups.values()]


def final_run_count(configs: list[RunConfig]) -> int:
    """How many reported runs these configs end in (a search ends in one run per final seed)."""
    return sum(len(c.extra.get("final_seeds", [c.seed])) if c.lr_search else 1 for c in configs)


def _field_of(message: str) -> str:
    text = message.lower()
    for key, fld in (("learning rate", "lr"), ("seed", "seeds"), ("layer", "layers"), ("task", "tasks"),
                     ("module", "families"), ("famil", "families"), ("model", "model")):
        if key in text:
            return fld
    return "settings"


def sweep_shape(form: Form, planned: list[PlannedRun]) -> str:
    """'2 module sets × 6 layers × 3 seeds × 1 task' (what multiplies into the run count)."""
    def n(label, values):
        k = len(set(values))
        return f"{k} {label}{'' if k == 1 else 's'}"
    if not planned:
        return "nothing"
    return " × ".join([n("task", [p.task for p in planned]), n("module set", [p.modules for p in planned]),
                       n("layer choice", [p.layers for p in planned]), n("seed", [p.seed for p in planned])])


# ---------------------------------------------------------------------------------------------- the preview

def preview(form: Form) -> dict:
    """What Submit would queue, before anything is queued: run count and per-run parameter counts.

    {"runs": N, "shape": "...", "model": ModelInfo, "rows": [{"modules", "layers", counts...}], "error": None}
    or {"error": message, "field": control} when the form is not valid yet."""
    try:
        planned = plan(form)
        to_configs(form, planned[:1])  # settings errors show in the preview too
    except Exception as err:  # a refusal beside its field; anything else in one line without internals
        from app.errors import is_refusal, visitor_message

        return {"error": visitor_message(err, "preview this selection"),
                "field": getattr(err, "field", "settings") if is_refusal(err) else "settings", "runs": 0, "rows": []}
    info = model_info(form.model)
    first_task = planned[0].task
    rows, seen = [], set()
    each = len({p.layers for p in planned if _layer_wise(p.modules)}) > 1 and (
        form.each_layer or str(form.layer_spec).strip().lower() == "each")
    for p in planned:
        key = (p.modules, "each" if each and _layer_wise(p.modules) else p.layers)
        if key in seen:
            continue
        seen.add(key)
        c = counts(info.name, first_task, p.modules, p.layers, form.train_head)
        shown = key[1] if key[1] != "each" else f"each (e.g. {p.layers})"
        rows.append({"modules": "+".join(p.modules), "layers": shown, "lr": run_lr_text(form, p.modules), **c})
    searches = len({(p.task, p.modules, p.layers) for p in planned}) if form.lr_search else 0
    return {"error": None, "field": None, "runs": len(planned), "searches": searches,
            "shape": sweep_shape(form, planned), "model": info, "task": first_task, "rows": rows}


def run_lr_text(form: Form, module_set) -> str:
    """The lr a planned run trains at: the typed one, its family's default, or the grid a search tries."""
    from tuning.config import lr_grid

    if form.lr_search:
        grid = lr_grid(module_set)
        return f"search {_sci(grid[0])}…{_sci(grid[-1])} ({len(grid)})"
    typed = resolve_lr(form.lr, _families(form))
    return _sci(typed if typed is not None else default_lr(module_set))


def preview_markdown(view: dict) -> str:
    """The preview as Markdown: the run count first, then one line per module set."""
    if view.get("error"):
        return f"**Nothing to queue yet.** {view['error']}"
    n, info = view["runs"], view["model"]
    head = (f"### {n} run{'s' if n != 1 else ''} will be queued\n"
            f"{view['shape']} · model **{info.name}** ({info.model_type}, {info.num_layers} layers)")
    if view.get("searches"):
        k = view["searches"]
        head += (f"\n\n🔎 First {k} learning-rate search{'es' if k != 1 else ''} (successive halving over each "
                 "family's grid, chosen on a held-out 10% of the training rows; about 1.5× one run each), then "
                 "every seed at the chosen lr.")
    if n > FORM_LIMIT:
        head += (f"\n\n⚠️ More than {FORM_LIMIT} runs: narrow the selection, or use the paper-study preset.")
    lines = ["| module | layers | lr | module params | trainable (+ head) | % of model |", "|:--|:--|:--|--:|--:|--:|"]
    for r in view["rows"]:
        lines.append(f"| {modules.short_label(r['modules'])} | {r['layers']} | {r['lr']} | {r['module_params']:,} "
                     f"| {r['trainable_params']:,} | {r['trainable_pct']:.4g}% |")
    total = view["rows"][0]["total_params"] if view["rows"] else 0
    foot = f"\nCounts per run for {view['task']} (of {total:,} parameters in the model)."
    return head + "\n\n" + "\n".join(lines) + "\n" + foot


# ---------------------------------------------------------------------------------------------- the preset

def paper_study(form: Form, lr_search: bool = True) -> list[RunConfig]:
    """The paper's study on the form's tasks, model, seeds and subsampling: Q K V AO FI FO LN (plus bias when
    ticked, and the random controls when asked) on all layers and on each layer alone, plus full fine-tuning,
    each with its own searched lr (one search per setting, then every seed at the chosen lr)."""
    info = model_info(form.model)
    families = list(PAPER_FAMILIES) + (["bias"] if "bias" in (form.families or []) else [])
    study = replace(form, families=families, together=False, lr=None, lr_search=lr_search,
                    layers=[str(i) for i in range(info.num_layers)], layer_spec="", each_layer=False)
    parts = [study, replace(study, each_layer=True), replace(study, families=["full"], random_control=False)]
    runs = sum(shape(p).runs for p in parts)  # counted before anything is listed
    if runs > PRESET_LIMIT:
        raise FormError("settings", f"the preset would queue {runs:,} runs, more than {PRESET_LIMIT:,}; "
                                    "choose fewer tasks or seeds")
    return search_configs(to_configs(study, [r for p in parts for r in plan(p, limit=None)]))


def preset_searches(form: Form) -> int:
    """How many searches the preset queues (one per setting), counted without building any."""
    info = model_info(form.model)
    families = len(PAPER_FAMILIES) + ("bias" in (form.families or []))
    controls = families if form.random_control else 0
    return len(_tasks(form)) * ((families + controls) * (1 + info.num_layers) + 1)


# Training rows per GLUE task (for time estimates when a run uses the whole training set).
GLUE_TRAIN_ROWS = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
                   "qnli": 104743, "rte": 2490, "wnli": 635}
SEARCH_COST = 1.5  # successive halving over 5 candidates: 5/8 + 3/8 + 2/4 of one run (tuning/search.py)


def measured_throughput(registry, model: str) -> float | None:
    """This lab's median training examples per second for a model, from its succeeded runs (None: none yet)."""
    if registry is None:
        return None
    done = registry.runs_frame(status="succeeded")
    done = done[(done["model"] == model) & (done["kind"] == "run")]
    rates = done["examples_per_second"].dropna()
    return float(rates.median()) if len(rates) else None


def estimated_seconds(configs: list[RunConfig], throughput: float) -> float:
    """Training time of these configs at `throughput` examples/s: a search costs SEARCH_COST runs, then its seeds."""
    total = 0.0
    for c in configs:
        rows = c.max_train or GLUE_TRAIN_ROWS.get(c.task, 10_000)
        one = rows * c.epochs / throughput
        total += one * (SEARCH_COST + len(c.extra.get("final_seeds", [c.seed])) if c.lr_search else 1)
    return total


def paper_study_message(form: Form, registry=None) -> tuple[str, int]:
    """The confirmation text and the number of registry entries the preset queues now (FormError if the form is
    bad): the searches, each of which then queues its runs."""
    checked(form)
    limits = public_limits()
    if limits is not None and preset_searches(form) > limits.max_active_per_visitor:  # refused before building
        raise FormError("settings", f"the preset would queue {preset_searches(form)} searches; this public demo "
                                    f"allows at most {limits.max_active_per_visitor} queued or running runs per visitor")
    configs = paper_study(form)
    n = len(configs)
    runs = final_run_count(configs)
    info = model_info(form.model)
    tasks = _tasks(form)
    seeds = parse_seeds(form.seeds)
    subsample = (f"{configs[0].max_train} training examples per run" if configs[0].max_train
                 else "the full training sets")
    families = "Q K V AO FI FO LN" + (" bias" if "bias" in (form.families or []) else "")
    controls = " + random controls" if form.random_control else ""
    rate = measured_throughput(registry, info.name)
    if rate:
        from app.labels import humanize_seconds

        eta = (f"About **{humanize_seconds(estimated_seconds(configs, rate))}** of training on one worker "
               f"(this lab's median {rate:.0f} examples/s on {info.name}).")
    else:
        eta = "No time estimate yet: this lab has no finished run on this model to measure its speed."
    text = (f"**The paper's study: {n} lr searches, then {runs} runs.** {families}{controls} × (all "
            f"{info.num_layers} layers + each layer alone) + full fine-tuning, × {len(seeds)} seed(s) × "
            f"{len(tasks)} task(s) ({', '.join(tasks)}), on {info.name} with {subsample}. Each setting first "
            f"searches its own learning rate (successive halving on a held-out 10% of the training rows), then "
            f"trains every seed at it. {eta} Queue them?")
    return text, n


# ---------------------------------------------------------------------------------------------- the gate

def allow(action: str, submitter: str | None, count: int = 1) -> None:
    """The one place the per-visitor quotas apply; raises ValueError (public.LimitError) to refuse.

    Open outside public mode. In public mode, `count` more runs (a submission or a retry) must fit the
    visitor's queued + running runs and the shared queue's length; a cancel is never over quota."""
    mode = _PUBLIC
    if mode is None or action == "cancel":
        return
    public.check_quota(mode.limits, mode.registry, submitter, count)


def vet(registry, submitter: str | None, configs=(), run_id=None, action: str = "submit") -> None:
    """Public mode's rules on what an action touches (allow counts, this looks): each config's caps
    (allow-listed model, no data folder, epochs, examples, length, batch), and for cancel/retry that the
    run is the visitor's own (a retry's config is vetted too). A no-op outside public mode."""
    mode = _PUBLIC
    if mode is None:
        return
    if run_id is not None:
        run = public.check_owner(registry, run_id, submitter, action)
        configs = [run["config"]] if action == "retry" else []
    for config in configs:
        public.check_config(mode.limits, config)


def _gate():
    """In public mode, one check-then-queue at a time, so two quick clicks cannot both pass a quota."""
    return _GATE if _PUBLIC is not None else contextlib.nullcontext()


def submit_runs(registry, configs, submitter: str | None, sweep_id: str | None = None) -> list[int]:
    """Queue validated configs through the registry (all or nothing); every UI submission comes here."""
    configs = list(configs)
    if not configs:
        raise FormError("settings", "nothing to queue")
    with _gate():
        vet(registry, submitter, configs)
        allow("submit", submitter, len(configs))
        if len(configs) == 1 and sweep_id is None:
            return [registry.submit(configs[0], submitter=submitter)]
        return registry.submit_many(configs, submitter=submitter, sweep_id=sweep_id or uuid.uuid4().hex[:12])


def cancel_run(registry, run_id, submitter: str | None) -> str:
    """Cancel a run (queued: never starts; running: stops at its next step); returns the new status."""
    run_id = run_id_of(run_id)
    vet(registry, submitter, run_id=run_id, action="cancel")
    allow("cancel", submitter)
    return registry.request_cancel(run_id)


def retry_run(registry, run_id, submitter: str | None) -> int:
    """Queue a failed, cancelled or interrupted run again as a new run; returns the new id."""
    run_id = run_id_of(run_id)
    with _gate():
        vet(registry, submitter, run_id=run_id, action="retry")
        allow("retry", submitter)
        return registry.retry(run_id, submitter=submitter)


@dataclass
class Outcome:
    """What the form shows after Submit: a message beside the button, one beside the layers, the ids queued."""

    message: str = ""
    layers_message: str = ""
    model_message: str = ""
    ids: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.ids)


def error_outcome(err: Exception, action: str = "queue these runs") -> Outcome:
    """Put an error beside the control it is about (layers and model have their own message slots); an error
    that is not a refusal is logged and shown as one line without internals (app.errors)."""
    from app.errors import is_refusal, visitor_message

    fld = (getattr(err, "field", None) or _field_of(str(err))) if is_refusal(err) else "settings"
    text = f"⚠️ {visitor_message(err, action)}"
    if fld == "layers":
        return Outcome(message="⚠️ Nothing was queued: fix the layers.", layers_message=text)
    if fld == "model":
        return Outcome(message="⚠️ Nothing was queued: fix the model.", model_message=text)
    return Outcome(message=f"{text}\n\nNothing was queued.")


def submit_form(registry, form: Form, submitter: str | None) -> Outcome:
    """Validate the whole form, then queue its runs; a bad value queues nothing and says what to fix.

    The runs are counted (and, in public mode, held against the visitor's quota) before any is built, so a
    request for a million runs is refused in microseconds instead of occupying the server."""
    try:
        found = shape(form)
        entries = found.runs // len(found.seeds) if form.lr_search else found.runs  # a search covers its seeds
        if found.runs <= FORM_LIMIT:
            allow("submit", submitter, entries)
        configs = build_configs(form)  # refuses more than FORM_LIMIT runs before listing them
        ids = submit_runs(registry, configs, submitter)
    except Exception as err:  # refusals say what to fix; anything else is logged and named in one safe line
        return error_outcome(err, "queue these runs")
    return Outcome(message=queued_message(configs, ids), ids=ids)


def submit_preset(registry, form: Form, submitter: str | None) -> Outcome:
    """Queue the paper's study (after the user confirmed the count)."""
    try:
        checked(form)
        allow("submit", submitter, preset_searches(form))  # the quota, before a single config is built
        configs = paper_study(form)
        ids = submit_runs(registry, configs, submitter, sweep_id="paper-" + uuid.uuid4().hex[:8])
    except Exception as err:
        return error_outcome(err, "queue the study")
    return Outcome(message=queued_message(configs, ids), ids=ids)


MAX_RUN_ID = 2**31 - 1  # the registry's id column is a 32-bit integer on every database


def run_id_of(value) -> int:
    """A run id from a dropdown, a table or an API call (12, 12.0 or '12'); FormError('run') otherwise."""
    try:
        number = float(str(value).strip().lstrip("#")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number) or not 1 <= number <= MAX_RUN_ID:
        raise FormError("run", f"a run id is a whole number from 1 to {MAX_RUN_ID:,}, got {_clip(value)}")
    return int(number)


def queued_message(configs: list[RunConfig], ids: list[int]) -> str:
    """'✅ Queued run #12: rte LN @ layer 5, seed 0 ...' or a count with the id range for sweeps."""
    searches = sum(c.lr_search for c in configs)
    if searches:
        runs = final_run_count(configs)
        where = f"#{ids[0]}" if len(ids) == 1 else f"#{min(ids)}–#{max(ids)}"
        return (f"✅ Queued **{searches} lr search{'es' if searches != 1 else ''}** ({where}); when it has chosen, "
                f"each queues its runs at that lr ({runs} run{'s' if runs != 1 else ''} in all). Follow them in the "
                "**Runs** tab.")
    if len(ids) == 1:
        c = configs[0]
        return (f"✅ Queued run **#{ids[0]}**: {c.task} · {modules.short_label(c.modules)} @ layers {c.layers} · "
                f"seed {c.seed} · lr {c.learning_rate:g}. Follow it in the **Runs** tab.")
    return (f"✅ Queued **{len(ids)} runs** (#{min(ids)}–#{max(ids)}). Follow them in the **Runs** tab; "
            "results appear in **Compare** as they finish.")


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
