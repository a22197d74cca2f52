"""RunConfig: every knob of one fine-tuning run in one validated dataclass (nanoGPT-style)."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from tuning import glue, modules


class ConfigError(ValueError):
    """An invalid run setting; the message says what was wrong and what is allowed."""


DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Starting points from a quick study on the embedded MiniLM (SST-2, 2k examples, 1 epoch):
# LayerNorm at 1e-3 stayed at chance while 1e-2 matched full fine-tuning, so small modules
# need far larger steps than the dense matrices.
DEFAULT_LR = {
    "full": 5e-5,
    "embeddings": 1e-4,
    "query": 3e-4, "key": 3e-4, "value": 3e-4, "attention_output": 3e-4,
    "ffn_intermediate": 2e-4, "ffn_output": 2e-4,
    "bias": 1e-3,
    "classifier": 1e-3,
    "layernorm": 1e-2,
}
DEVICES = r"auto|cpu|cuda(:\d+)?"
PRECISIONS = ("auto", "fp32", "bf16")
PREFIX_CACHE = ("auto", "on", "off")


def default_lr(families) -> float:
    """The default learning rate for a family set: the most conservative one among them."""
    fams = modules.parse_families(families)
    return min(DEFAULT_LR[f.split(":", 1)[-1]] for f in fams)


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
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self):
        self.validate()

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.modules)

    def validate(self) -> "RunConfig":
        """Normalise names and refuse anything out of range, with what is allowed."""
        try:
            self.task = glue.get_task(self.task).name
            self.modules = modules.parse_families(self.modules)
            # Syntax now; the range is checked against the model once its depth is known.
            modules.parse_layers(self.layers, 10**6)
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
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            raise ConfigError(f"learning rate must be a number in (0, 1], got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight decay must be in [0, 1), got {self.weight_decay!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not re.fullmatch(DEVICES, str(self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.prefix_cache not in PREFIX_CACHE:
            raise ConfigError(f"prefix cache must be one of {', '.join(PREFIX_CACHE)}, got {self.prefix_cache!r}")
        for name in ("compile", "cuda_graphs", "train_head"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name.replace('_', ' ')} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be the embedded default, a Hub id or a local path")
        self.model = self.model.strip()
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modules"] = list(self.modules)
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
        if isinstance(data.get("modules"), list):
            data["modules"] = tuple(data["modules"])
        return cls(**data)

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})


def _positive_int(cfg, attr: str, label: str, lo: int, hi: int) -> None:
    value = getattr(cfg, attr)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {value!r}")
