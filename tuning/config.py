"""RunConfig: every knob of one fine-tuning run in one validated dataclass (nanoGPT-style)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moduletune.tuning import glue, modules, trackers
from moduletune.tuning.learning_rates import default_lr, lr_grid
from moduletune.tuning.modules import MAX_LAYER_SPEC_CHARS
from moduletune.tuning.text import clip


class ConfigError(ValueError):
    """An invalid run setting; the message says what was wrong and what is allowed, and `field` names the RunConfig
    field it is about (None for the config as a whole), so a form can put the message beside that field's control."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@contextmanager
def about(name: str):
    """Mark a refusal raised inside (a ValueError of any kind: a GLUE folder, a layer range) as being about the
    RunConfig field `name`, unless it names its field already; its type and message stay as they were."""
    try:
        yield
    except ValueError as err:
        if getattr(err, "field", None) is None:
            setattr(err, "field", name)  # noqa: B010  (any ValueError, not only ours: set, not declared)
        raise


DEFAULT_MODEL = "all-MiniLM-L6-v2"

EVAL_ON = ("validation", "holdout")
# holdout: choose on a slice of the training rows (honest); eval: on the reported evaluation set (optimistic).
LR_SELECTION = ("holdout", "eval")
DEVICES = r"auto|cpu|cuda(:\d+)?"
PRECISIONS = ("auto", "fp32", "bf16")
PREFIX_CACHE = ("auto", "on", "off")
MAX_FAMILIES = 16  # module families trained together in one run (there are 12)
MAX_GRID = 20  # learning rates one search may try
MAX_NAME_CHARS = 300  # a model name, Hub id or path (the registry's column holds 300)
MAX_EXTRA_CHARS = 10_000


class FROM_CONFIG:  # noqa: N801  (a marker, used as a value: the form's default is the engine's)
    """A Knob's form_default when the form starts at the engine's default."""


@dataclass(frozen=True)
class Knob:
    """What a setting is, beyond its default: how it is checked, named on the command line and shown in a form.

    kind: int | number | choice | bool | text (checked generically from bounds/allowed/choices/limit) or a
    kind validate() checks itself (task, families, layers, model, floats, mapping). bounds: (lo, hi) for
    int. allowed: a predicate and its words for number. optional: None is allowed (it means the default
    described in help). flag: the CLI flag, None for none; a bool defaulting to True is turned off by its
    flag (--no-head). form: the Experiment form's field that sets it, or "advanced" (an input made from this
    Knob in the form's Advanced settings), None for nowhere; a field named after the setting itself (form="epochs")
    is a main field of the form, also made from this Knob. form_label: the form's label where it differs from
    label (which messages use). form_default: the form's default where it differs from the engine's (FROM_CONFIG).
    zero: what 0 means in the form's box for an optional int ("the whole training set"). widget: the form's input
    where the kind does not decide it (model: the model box; radio: choices shown side by side).
    internal: set by moduletune itself, never by a person (no flag, no form entry)."""

    kind: str
    help: str
    label: str = ""
    bounds: tuple | None = None
    allowed: tuple | None = None  # (predicate, "a number in (0, 1]")
    choices: tuple | None = None
    limit: int | None = None
    optional: bool = False
    flag: str | None = ""  # "": --<name with dashes>
    form: str | None = "advanced"
    internal: bool = False
    form_label: str = ""
    form_default: object = FROM_CONFIG
    zero: str = "the default"
    widget: str = ""

    def title(self, name: str) -> str:
        """How the form names the setting in a label or a message: 'training examples', 'learning rate'."""
        return self.form_label or self.label or name.replace("_", " ")


def parse_floats(text) -> tuple[float, ...]:
    """'1e-4, 1e-3,1e-2' -> (1e-4, 1e-3, 1e-2): how a "floats" setting is typed in a flag or a form box; ValueError
    for anything else (the caller says which field)."""
    return tuple(float(part) for part in str(text).split(",") if part.strip())


def setting(default, kind: str, help: str, **knob) -> Any:
    """A RunConfig field whose Knob (its checks, flag, form entry and help) rides in the field's metadata (typed Any,
    as dataclasses.field is, so the field keeps its declared type)."""
    meta = {"knob": Knob(kind, help, **knob)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def knob(name: str) -> Knob:
    """The Knob of a RunConfig field."""
    return KNOBS[name]


def _in(lo, hi, lo_open=False, hi_open=False):
    ok = lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)  # noqa: E731
    return ok, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


@dataclass
class RunConfig:
    """One run: which model, task, modules and layers, and how to train them (each field's Knob says how
    it is checked, which CLI flag sets it and where the form shows it)."""

    task: str = setting("sst2", "task", "GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli", limit=32, form="tasks")
    modules: tuple[str, ...] = setting(
        ("layernorm",),
        "families",
        "module family (query key value attention_output ffn_intermediate ffn_output "
        "layernorm bias embeddings classifier full random:<family>; aliases Q K V AO FI FO LN); join with + to "
        "train several together; lora:<families> or ia3:<families> (lora:Q+V, lora:all-linear, ia3:K+V+FO) "
        "trains that peft adapter instead",
        form="families",
    )
    layers: str = setting("all", "layers", "all, 7, 0-3,11, first:2, last:4", limit=MAX_LAYER_SPEC_CHARS, form="layers")
    model: str = setting(
        DEFAULT_MODEL,
        "model",
        "the embedded all-MiniLM-L6-v2 (default), a Hub id or a local path",
        limit=300,
        form="model",
        widget="model",
    )
    train_head: bool = setting(
        True,
        "bool",
        "train the classifier head too (--no-head keeps it frozen)",
        label="train the classifier head",
        flag="--no-head",
        form="train_head",
        form_label="train the classifier head too",
    )
    # A LoRA's shape (modules lora:<families>); (IA)³ has none. Rank 64 on every linear module of a BERT-base is
    # still under 4% of it; the public Space caps it lower (app/public.py).
    lora_rank: int = setting(8, "int", "LoRA rank r (lora:<families> runs)", label="LoRA rank", bounds=(1, 1024))
    lora_alpha: float = setting(
        16.0,
        "number",
        "LoRA alpha: its update is scaled by alpha / r",
        label="LoRA alpha",
        allowed=_in(0, 4096, lo_open=True),
    )
    lora_dropout: float = setting(
        0.0, "number", "dropout on a LoRA's input", label="LoRA dropout", allowed=_in(0, 1, hi_open=True)
    )
    epochs: int = setting(1, "int", "passes over the training rows", bounds=(1, 1000), form="epochs")
    lr: float | None = setting(
        None,
        "number",
        "learning rate (default: per module family)",
        label="learning rate",
        allowed=_in(0, 1, lo_open=True),
        optional=True,
        form="lr",
    )
    batch_size: int = setting(32, "int", "training batch size", label="batch size", bounds=(1, 4096), form="batch_size")
    eval_batch_size: int = setting(128, "int", "evaluation batch size", label="eval batch size", bounds=(1, 8192))
    max_seq_len: int = setting(
        128, "int", "tokens per example (longer ones are truncated)", label="max sequence length", bounds=(8, 4096)
    )
    warmup_ratio: float = setting(
        0.1, "number", "share of the steps spent warming the lr up", allowed=_in(0, 1, hi_open=True)
    )
    weight_decay: float = setting(0.01, "number", "AdamW weight decay", allowed=_in(0, 1, hi_open=True))
    # Seeds fit a 32-bit signed integer: what every registry column and every RNG accepts.
    seed: int = setting(
        0, "int", "the run's seed (data order, head init, dropout, subsamples)", bounds=(0, 2**31 - 1), form="seeds"
    )
    # The form starts at 2,000 training examples: with the embedded MiniLM on SST-2, 1 epoch on all layers shows
    # the paper's effect in about a minute on a CPU (~0.77 for full fine-tuning and LayerNorm-only alike).
    max_train: int | None = setting(
        None,
        "int",
        "train on a seeded, stratified sample of N examples",
        bounds=(1, 10**9),
        optional=True,
        form="max_train",
        form_label="training examples",
        form_default=2000,
        zero="the whole training set",
    )
    max_eval: int | None = setting(
        None,
        "int",
        "evaluate on a seeded sample of N examples",
        bounds=(1, 10**9),
        optional=True,
        form="max_eval",
        form_label="evaluation examples",
        zero="the whole validation set",
    )
    eval_every: int | None = setting(
        None, "int", "also evaluate every N steps (default: each epoch's end)", bounds=(1, 10**9), optional=True
    )
    checkpoint_every: int | None = setting(
        None,
        "int",
        "also checkpoint every N steps (default: each epoch), so a dead worker loses less",
        bounds=(1, 10**9),
        optional=True,
    )
    device: str = setting("auto", "text", "auto, cpu, cuda, cuda:N", limit=20)
    precision: str = setting("auto", "choice", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=PRECISIONS)
    glue_dir: str | None = setting(
        None,
        "text",
        "a local GLUE folder (default: MODULETUNE_GLUE_DIR, else the Hub)",
        label="GLUE folder",
        limit=1000,
        optional=True,
    )
    # Frozen-prefix cache: the layers below the lowest trainable one run once (without dropout) and
    # their output is reused across epochs and runs. auto = only where that changes nothing, i.e.
    # the frozen prefix has no dropout anyway; on = always (frozen layers then run without dropout).
    prefix_cache: str = setting(
        "auto",
        "choice",
        "reuse the frozen layers' output: auto = only where that changes nothing (no dropout)",
        choices=PREFIX_CACHE,
        form="prefix_cache",
        form_label="frozen-prefix cache",
        widget="radio",
    )
    compile: bool = setting(False, "bool", "torch.compile the model (pays a warm-up; helps long GPU runs)")
    # On a GPU, replay each batch shape's forward+backward as CUDA graphs (see tuning/graphs.py).
    cuda_graphs: bool = setting(True, "bool", "on a GPU, replay each step as CUDA graphs (--no-cuda-graphs: eagerly)")
    # Where evaluation happens: the task's validation split(s), or a seeded stratified slice of
    # holdout_fraction of the (subsampled) training rows, held out from training.
    eval_on: str = setting(
        "validation",
        "choice",
        "evaluate on the task's validation split(s) or on a held-out slice of the training rows",
        choices=EVAL_ON,
    )
    holdout_fraction: float = setting(
        0.1,
        "number",
        "share of the training rows held out to choose the lr (default 0.1)",
        allowed=_in(0, 0.5, lo_open=True),
    )
    # Search the learning rate first (tuning/search.py: successive halving over lr_grid), then train at it.
    lr_search: bool = setting(
        False,
        "bool",
        "search the learning rate first: a race over the family's grid (1.25-2.5x one run's steps, "
        "more when the best lr is at the grid's edge), chosen on a held-out slice of the training rows, then "
        "train at the chosen lr",
        form="lr_search",
        form_label="search the learning rate first (the typed lr is then ignored)",
    )
    lr_selection: str = setting(
        "holdout",
        "choice",
        "where the search scores candidates: holdout (a slice of the "
        "training rows, the honest default) or eval (the reported evaluation set: "
        "optimistic)",
        choices=LR_SELECTION,
    )
    lr_grid: tuple[float, ...] | None = setting(
        None,
        "floats",
        "comma-separated learning rates to search (default: the family's log-spaced grid)",
        optional=True,
    )
    # Experiment trackers fed from the run's events by `moduletune run` and the workers (tuning/trackers.py).
    report_to: str | None = setting(
        None,
        "trackers",
        "also log to trackio, mlflow, tensorboard (comma-separated) or none (default: the worker's --report-to)",
        limit=100,
        optional=True,
    )
    extra: dict = setting(
        {},
        "mapping",
        "notes moduletune keeps with the run (a search's final seeds, its choice)",
        internal=True,
        flag=None,
        form=None,
    )

    def __post_init__(self):
        self.validate()

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.modules)

    @property
    def search_grid(self) -> tuple[float, ...]:
        """The learning rates an lr search tries: lr_grid, else the family grid."""
        return self.lr_grid if self.lr_grid is not None else lr_grid(self.modules)

    def validate(self) -> "RunConfig":
        """Normalise names and refuse anything out of range or of the wrong type, with what is allowed; each refusal
        is a ConfigError naming its field."""
        self._validate_names()
        for name, k in KNOBS.items():
            _check(self, name, k)
        if not re.fullmatch(DEVICES, self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {clip(self.device)}", "device")
        if self.lr_grid is not None:
            self.lr_grid = _grid(self.lr_grid)
        if not isinstance(self.model, str) or not self.model.strip() or len(self.model) > MAX_NAME_CHARS:
            raise ConfigError(
                f"model must be the embedded default, a Hub id or a local path of at most "
                f"{MAX_NAME_CHARS} characters, got {clip(self.model)}",
                "model",
            )
        self.model = self.model.strip()
        if not isinstance(self.extra, dict) or len(json.dumps(self.extra, default=str)) > MAX_EXTRA_CHARS:
            raise ConfigError(f"extra must be a mapping of at most {MAX_EXTRA_CHARS:,} characters as JSON", "extra")
        return self

    def _validate_names(self) -> None:
        """The task, the module families, the trackers and the layer spec's syntax, each to its canonical form."""
        _text(self, "task", "task", 32)
        _text(self, "layers", "layer spec", modules.MAX_LAYER_SPEC_CHARS, also=(int,))
        names = self.modules.replace("+", ",").split(",") if isinstance(self.modules, str) else self.modules
        if (
            not isinstance(names, (list, tuple))
            or not 1 <= len(names) <= MAX_FAMILIES
            or not all(isinstance(m, str) and len(m) <= 64 for m in names)
        ):
            raise ConfigError(
                f"modules must be 1 to {MAX_FAMILIES} family names such as layernorm, query or LN, "
                f"got {clip(self.modules)}",
                "modules",
            )
        self.task = _named("task", lambda: glue.get_task(self.task).name)
        self.modules = _named("modules", lambda: modules.parse_families(self.modules))
        self.report_to = _named("report_to", lambda: trackers.parse_report_to(self.report_to))
        # Syntax now; the range is checked against the model once its depth is known.
        _named("layers", lambda: modules.layer_spec_parts(self.layers))
        self.layers = str(self.layers).strip().lower().replace(" ", "")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modules"] = list(self.modules)
        if self.lr_grid is not None:
            d["lr_grid"] = list(self.lr_grid)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build from a dict and validate it, refusing unknown keys so typos never silently fall back to defaults."""
        return cls(**_known(data))

    @classmethod
    def from_stored(cls, data: dict) -> "RunConfig":
        """A config as the registry recorded it, after submission checked it: read back without checking it again
        (a worker and fine_tune trust what was checked where the run entered). A missing key has its default."""
        config = cls.__new__(cls)
        values = _known(data)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(config, f.name, values.get(f.name, default))
        return config

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})


KNOBS = {f.name: f.metadata["knob"] for f in dataclasses.fields(RunConfig)}
MAX_SEED = KNOBS["seed"].bounds[1]


def engine_default(name: str):
    """A setting's default in the engine (RunConfig's)."""
    f = RunConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def form_default(name: str):
    """A setting's default in the Experiment form: its Knob's form_default, else the engine's."""
    k = KNOBS[name]
    return engine_default(name) if k.form_default is FROM_CONFIG else k.form_default


def _known(data: dict) -> dict:
    """A config's fields from a dict (JSON's lists as the config's tuples); ConfigError naming unknown keys."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    data = dict(data)
    for name in ("modules", "lr_grid"):
        if isinstance(data.get(name), list):
            data[name] = tuple(data[name])
    return data


def _named(name: str, parse):
    """parse(), its ValueError as a ConfigError about the field `name`."""
    try:
        return parse()
    except ValueError as err:
        raise ConfigError(str(err), name) from None


def _grid(grid) -> tuple[float, ...]:
    """An lr grid as sorted distinct floats; ConfigError('lr_grid') unless 2 to MAX_GRID numbers in (0, 1]."""
    values = grid if isinstance(grid, (list, tuple)) else [grid]
    bad = [v for v in values if not (_number(v) and 0 < v <= 1)]
    if bad or not 2 <= len(set(values)) <= MAX_GRID:
        raise ConfigError(
            f"lr grid must hold at least 2 distinct (at most {MAX_GRID}) learning rates, each a "
            f"number in (0, 1]; got {clip(grid)}",
            "lr_grid",
        )
    return tuple(sorted({float(v) for v in values}))


def _check(cfg, name: str, k: Knob) -> None:
    """One setting against its Knob (the generic kinds; the others are checked in validate)."""
    value = getattr(cfg, name)
    label = k.label or name.replace("_", " ")
    if value is None and k.optional or k.kind not in ("int", "number", "choice", "bool", "text"):
        return
    if k.kind == "int":
        lo, hi = k.bounds
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{label} must be an integer from {lo:,} to {hi:,}, got {clip(value)}", name)
    elif k.kind == "number":
        ok, words = k.allowed
        if not (_number(value) and ok(value)):
            raise ConfigError(f"{label} must be {words}, got {clip(value)}", name)
    elif k.kind == "choice":
        if not isinstance(value, str) or value not in k.choices:
            raise ConfigError(f"{label} must be one of {', '.join(k.choices)}, got {clip(value)}", name)
    elif k.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {clip(value)}", name)
    elif isinstance(value, bool) or not isinstance(value, str) or len(value) > k.limit:
        raise ConfigError(f"{label} must be text of at most {k.limit:,} characters, got {clip(value)}", name)


def _number(value) -> bool:
    """A real, finite number (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _text(cfg, attr: str, label: str, limit: int, also: tuple = ()) -> None:
    value = getattr(cfg, attr)
    if isinstance(value, bool) or not isinstance(value, (str, *also)) or len(str(value)) > limit:
        raise ConfigError(f"{label} must be text of at most {limit:,} characters, got {clip(value)}", attr)
