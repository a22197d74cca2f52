"""RunConfig: every knob of one fine-tuning run in one validated dataclass (nanoGPT-style)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

from tuning import glue, modules


class ConfigError(ValueError):
    """An invalid run setting; the message says what was wrong and what is allowed."""


DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Each family's default lr and search range live in its row of the family table (tuning/modules.py).
DEFAULT_LR = {f.name: f.default_lr for f in modules.FAMILY_TABLE}
LR_SEARCH_RANGE = {f.name: f.lr_range for f in modules.FAMILY_TABLE}
EVAL_ON = ("validation", "holdout")
# holdout: choose on a slice of the training rows (honest); eval: on the reported evaluation set (optimistic).
LR_SELECTION = ("holdout", "eval")
DEVICES = r"auto|cpu|cuda(:\d+)?"
PRECISIONS = ("auto", "fp32", "bf16")
PREFIX_CACHE = ("auto", "on", "off")
MAX_SEED = 2**31 - 1
MAX_FAMILIES = 16  # module families trained together in one run (there are 12)
MAX_GRID = 20  # learning rates one search may try
MAX_NAME_CHARS = 300  # a model name, Hub id or path (the registry's column holds 300)
MAX_EXTRA_CHARS = 10_000


def default_lr(families) -> float:
    """The default learning rate for a family set: the most conservative one among them."""
    fams = modules.parse_families(families)
    return min(DEFAULT_LR[f.split(":", 1)[-1]] for f in fams)


def lr_search_range(families) -> tuple[float, float]:
    """The (lo, hi) a search covers for a family set: the families' intersection, else the most conservative.

    random:<family> uses its base family's range. An intersection holding fewer than two grid points
    counts as empty; then the range of the family with the smallest default learning rate is used.
    """
    bases = [f.split(":", 1)[-1] for f in modules.parse_families(families)]
    lo = max(LR_SEARCH_RANGE[b][0] for b in bases)
    hi = min(LR_SEARCH_RANGE[b][1] for b in bases)
    if len(_half_decades(lo, hi)) >= 2:
        return lo, hi
    return LR_SEARCH_RANGE[min(bases, key=lambda b: (DEFAULT_LR[b], b))]


def lr_grid(families) -> tuple[float, ...]:
    """Log-spaced candidates for a family set: the 1-3-10 half-decade points inside its search range."""
    return _half_decades(*lr_search_range(families))


def _half_decades(lo: float, hi: float) -> tuple[float, ...]:
    """Every 1eN and 3eN from lo to hi inclusive, as clean floats (3e-4, not 0.00030000000000000003)."""
    points = (float(f"{m}e{e}") for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
              for m in (1, 3))
    return tuple(p for p in points if lo * (1 - 1e-9) <= p <= hi * (1 + 1e-9))


@dataclass
class RunConfig:
    """One run: which model, task, modules and layers, and how to train them."""

    task: str = "sst2"
    modules: tuple[str, ...] = ("layernorm",)
    layers: str = "all"
    model: str = DEFAULT_MODEL
    train_head: bool = True
    epochs: int = 1
    lr: float | None = None  # None: the per-family default (see DEFAULT_LR)
    batch_size: int = 32
    eval_batch_size: int = 128
    max_seq_len: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    max_train: int | None = None
    max_eval: int | None = None
    eval_every: int | None = None  # steps; None evaluates at the end of each epoch only
    checkpoint_every: int | None = None  # steps; None checkpoints at the end of each epoch only
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    glue_dir: str | None = None  # None: MODULETUNE_GLUE_DIR, else the Hub
    # Frozen-prefix cache: the layers below the lowest trainable one run once (without dropout) and
    # their output is reused across epochs and runs. auto = only where that changes nothing, i.e.
    # the frozen prefix has no dropout anyway; on = always (frozen layers then run without dropout).
    prefix_cache: str = "auto"
    compile: bool = False  # torch.compile the model (pays a warm-up; helps long GPU runs)
    # On a GPU, replay each batch shape's forward+backward as CUDA graphs (see tuning/graphs.py).
    cuda_graphs: bool = True
    # Where evaluation happens: the task's validation split(s), or a seeded stratified slice of
    # holdout_fraction of the (subsampled) training rows, held out from training.
    eval_on: str = "validation"
    holdout_fraction: float = 0.1
    # Search the learning rate first (tuning/search.py: successive halving over lr_grid), then train at it.
    lr_search: bool = False
    lr_selection: str = "holdout"  # holdout (honest) or eval (selects on the reported set: optimistic)
    lr_grid: tuple[float, ...] | None = None  # None: the family grid (config.lr_grid)
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run

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
        """Normalise names and refuse anything out of range or of the wrong type, with what is allowed."""
        _text(self, "task", "task", 32)
        _text(self, "layers", "layer spec", modules.MAX_LAYER_SPEC_CHARS, also=(int,))
        if isinstance(self.modules, str):
            self.modules = (self.modules,)
        if (not isinstance(self.modules, (list, tuple)) or not 1 <= len(self.modules) <= MAX_FAMILIES
                or not all(isinstance(m, str) and len(m) <= 64 for m in self.modules)):
            raise ConfigError(f"modules must be 1 to {MAX_FAMILIES} family names such as layernorm, query or LN, "
                              f"got {_clip(self.modules)}")
        try:
            self.task = glue.get_task(self.task).name
            self.modules = modules.parse_families(self.modules)
            # Syntax now; the range is checked against the model once its depth is known.
            modules.layer_spec_parts(self.layers)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.layers = str(self.layers).strip().lower().replace(" ", "")
        _positive_int(self, "epochs", "epochs", 1, 1000)
        _positive_int(self, "batch_size", "batch size", 1, 4096)
        _positive_int(self, "eval_batch_size", "eval batch size", 1, 8192)
        _positive_int(self, "max_seq_len", "max sequence length", 8, 4096)
        for name in ("max_train", "max_eval", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                _positive_int(self, name, name.replace("_", " "), 1, 10**9)
        # Seeds fit a 32-bit signed integer: what every registry column and every RNG accepts.
        _positive_int(self, "seed", "seed", 0, MAX_SEED)
        if self.lr is not None and not (_number(self.lr) and 0 < self.lr <= 1):
            raise ConfigError(f"learning rate must be a number in (0, 1], got {_clip(self.lr)}")
        if not (_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            raise ConfigError(f"warmup ratio must be a number in [0, 1), got {_clip(self.warmup_ratio)}")
        if not (_number(self.weight_decay) and 0 <= self.weight_decay < 1):
            raise ConfigError(f"weight decay must be a number in [0, 1), got {_clip(self.weight_decay)}")
        if not isinstance(self.device, str) or not re.fullmatch(DEVICES, self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {_clip(self.device)}")
        for name, allowed in (("precision", PRECISIONS), ("prefix_cache", PREFIX_CACHE), ("eval_on", EVAL_ON)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise ConfigError(f"{name.replace('_', ' ')} must be one of {', '.join(allowed)}, "
                                  f"got {_clip(getattr(self, name))}")
        if not (_number(self.holdout_fraction) and 0 < self.holdout_fraction <= 0.5):
            raise ConfigError(f"holdout fraction must be a number in (0, 0.5], got {_clip(self.holdout_fraction)}")
        if not isinstance(self.lr_selection, str) or self.lr_selection not in LR_SELECTION:
            raise ConfigError(f"lr selection must be one of {', '.join(LR_SELECTION)} (holdout: a slice of the "
                              f"training rows; eval: the reported set, optimistic), got {_clip(self.lr_selection)}")
        if self.lr_grid is not None:
            grid = self.lr_grid if isinstance(self.lr_grid, (list, tuple)) else [self.lr_grid]
            bad = [v for v in grid if not (_number(v) and 0 < v <= 1)]
            if bad or not 2 <= len(set(grid)) <= MAX_GRID:
                raise ConfigError(f"lr grid must hold at least 2 distinct (at most {MAX_GRID}) learning rates, each a number in "
                                  f"(0, 1]; got {_clip(self.lr_grid)}")
            self.lr_grid = tuple(sorted({float(v) for v in grid}))
        for name in ("compile", "cuda_graphs", "train_head", "lr_search"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name.replace('_', ' ')} must be true or false, got {_clip(getattr(self, name))}")
        if not isinstance(self.model, str) or not self.model.strip() or len(self.model) > MAX_NAME_CHARS:
            raise ConfigError(f"model must be the embedded default, a Hub id or a local path of at most "
                              f"{MAX_NAME_CHARS} characters, got {_clip(self.model)}")
        self.model = self.model.strip()
        if self.glue_dir is not None:
            _text(self, "glue_dir", "GLUE folder", 1000)
        if not isinstance(self.extra, dict) or len(json.dumps(self.extra, default=str)) > MAX_EXTRA_CHARS:
            raise ConfigError(f"extra must be a mapping of at most {MAX_EXTRA_CHARS:,} characters as JSON")
        return self

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
        """Build from a dict, refusing unknown keys so typos never silently fall back to defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        data = dict(data)
        for name in ("modules", "lr_grid"):  # JSON has lists where the config holds tuples
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return cls(**data)

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})


def _positive_int(cfg, attr: str, label: str, lo: int, hi: int) -> None:
    value = getattr(cfg, attr)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{label} must be an integer from {lo:,} to {hi:,}, got {_clip(value)}")


def _number(value) -> bool:
    """A real, finite number (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _text(cfg, attr: str, label: str, limit: int, also: tuple = ()) -> None:
    value = getattr(cfg, attr)
    if isinstance(value, bool) or not isinstance(value, (str, *also)) or len(str(value)) > limit:
        raise ConfigError(f"{label} must be text of at most {limit:,} characters, got {_clip(value)}")


def _clip(value, limit: int = 60) -> str:
    """A value quoted in a message, cut short: an error never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"
