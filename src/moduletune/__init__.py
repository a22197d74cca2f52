"""moduletune's Python API: fine-tune only the modules you choose, then keep and compare the runs.

    import moduletune as mt

    result = mt.fine_tune(mt.RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=256))
    print(result.primary_metric_name, result.primary_metric, f"{result.trainable_pct:.4f}% trained")

Importing it loads no model, opens no database and touches no CUDA: each name below is imported on its
first use. The packages are moduletune.tuning (the science), moduletune.tasks (queue, jobs, registry)
and moduletune.app (the web app and the CLI); see ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fine_tune": "moduletune.tuning.train",  # fine_tune(config, on_event=None, ...) -> RunResult
    "RunConfig": "moduletune.tuning.config",  # every setting of one run, validated
    "RunResult": "moduletune.tuning.train",
    "lr_search": "moduletune.tuning.search",  # successive halving over a family's lr grid
    "load_tuned": "moduletune.tuning.artifacts",  # (model, tokenizer, config) of a trained run's artifact
    "select_parameters": "moduletune.tuning.modules",  # which parameters a family x layers selection trains
    "FAMILY_TABLE": "moduletune.tuning.modules",  # every module family and its facts
    "Registry": "moduletune.tasks.registry",  # the runs: runs_frame(), events_frame(), get(), ...
    "submit": "moduletune.tasks.submission",  # submit(registry, config) -> run id, queued for a worker
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'moduletune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


try:
    from importlib.metadata import version as _version

    __version__ = _version("moduletune")
except Exception:  # a checkout that is not installed
    __version__ = "0+unknown"
