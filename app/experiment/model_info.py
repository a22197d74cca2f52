"""What the form needs to know about a model before any run: its depth, its architecture, exact counts.

Read from the model's config alone and built on the meta device (no weights, no memory); cached per name.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import guard_model
from moduletune.tuning import glue, methods, modules
from moduletune.tuning import models as tuning_models
from moduletune.tuning.config import DEFAULT_MODEL
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.models import build_from_config
from moduletune.tuning.text import one_line


@dataclass(frozen=True)
class ModelInfo:
    """A model's name, architecture and depth: what the Layers toggles are made from."""

    name: str
    model_type: str
    num_layers: int

    @property
    def layers_note(self) -> str:
        return f"{self.name}: {self.num_layers} layers (0-{self.num_layers - 1})"


_LOCK = threading.Lock()
_META_MODELS: dict[tuple, object] = {}
_COUNTS: dict[tuple, dict] = {}


def model_name(text) -> str:
    """The model field's text, or the embedded default when it is blank."""
    return (str(text).strip() if text else "") or DEFAULT_MODEL


def model_info(name) -> ModelInfo:
    """Depth and architecture of a model from its config alone (cached per name); FormError('model') if unusable."""
    name = model_name(name)
    guard_model(name)  # public mode: a typed name or path is refused before it is looked up
    return _model_info(name)


@functools.lru_cache(maxsize=64)
def _model_info(name: str) -> ModelInfo:
    try:
        config = tuning_models.load_config(name)  # read once per process (tuning.models)
        arch_type = config.model_type
        modules.architecture_for(arch_type)
        info = ModelInfo(name, arch_type, modules.num_hidden_layers(config))
    except (ValueError, OSError) as err:
        raise FormError("model", f"{name}: {one_line(err)}") from None
    return info


def _meta_model(name: str, num_labels: int, shared: bool = True):
    """The model built on the meta device (no memory, no weights): enough to count parameters; shared=False: a new one
    that no other count sees."""
    key = (name, num_labels)
    with _LOCK:
        if shared and key in _META_MODELS:
            return _META_MODELS[key]

    model = build_from_config(tuning_models.load_config(name), num_labels=num_labels, on_meta=True)
    if not shared:
        return model
    with _LOCK:
        _META_MODELS[key] = model
    return model


def counts(
    model: str, task: str, families, layers: str, train_head: bool = True, adapter: AdapterSettings | None = None
) -> dict:
    """Exact trainable-parameter counts of one run (module, head, total, percentages; a method's at its adapter
    settings, peft's defaults when none are given); cached."""
    fams = modules.parse_families(families)
    adapter = adapter if any(methods.method_of(f) for f in fams) else None
    key = (model_name(model), glue.get_task(task).num_labels, fams, layers, bool(train_head), adapter)
    with _LOCK:
        if key in _COUNTS:
            return _COUNTS[key]
    # A method's count wraps the model with its adapter: on a meta model of its own, never the shared one.
    fresh = any(methods.method_of(f) for f in fams)
    meta = _meta_model(key[0], key[1], shared=not fresh)
    found = modules.select_parameters(meta, fams, layers, train_head, 0, adapter).counts()
    with _LOCK:
        _COUNTS[key] = found
    return found
