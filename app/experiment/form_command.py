"""The command line equal to the Experiment form: `moduletune submit ...` for one run, `moduletune sweep ...` else.

Made from the same plan (app.experiment.plan.shape) and the same run flags (tuning.flags, from the Knobs) that
Submit and the CLI use, so pasting it into a shell queues exactly the runs the form would.
"""

from __future__ import annotations

import shlex

from moduletune.app.experiment.form import Form
from moduletune.app.experiment.model_info import model_info
from moduletune.app.experiment.plan import build_configs, shape
from moduletune.tuning.config import DEFAULT_MODEL, RunConfig
from moduletune.tuning.flags import run_flags

SWEPT = ("task", "modules", "layers", "seed")  # what the sweep's own flags say, one value per point


def form_command(form: Form) -> str:
    """The `moduletune` command that queues what this form would queue; FormError when the form is not valid."""
    configs = build_configs(form)  # the form's own checks first: a command is shown only for a valid form
    found = shape(form)
    first = configs[0]
    settings = setting_flags(first)
    if len(configs) == 1 and len(found.seeds) == 1:  # one run (or one search of one seed): what Submit sends alone
        words = ["moduletune", "submit", "--task", first.task, "--modules", "+".join(first.modules)]
        words += ["--layers", first.layers, "--seed", str(first.seed)]
        return join(words + settings)
    words = ["moduletune", "sweep", "--tasks", ",".join(found.tasks)]
    words += ["--modules", ",".join("+".join(s) for s in found.sets), "--layers", layers_flag(form, found.specs)]
    words += ["--seeds", ",".join(str(s) for s in found.seeds)]
    if len(configs) > 100:
        words.append("--yes")  # the CLI asks for it above its sweep limit; the form has counted them already
    return join(words + settings)


def layers_flag(form: Form, specs: list[str]) -> str:
    """One spec, or 'each' when the form asks for one run per layer of the model."""
    if len(specs) == 1:
        return specs[0]
    layers = [str(i) for i in range(model_info(form.model).num_layers)]
    if specs != layers:  # the form only ever plans one spec, or every layer alone
        raise ValueError(f"no single --layers value gives the layer choices {specs}")
    return "each"


def setting_flags(config: RunConfig) -> list[str]:
    """The flags for every setting that differs from its default (sweep points aside), in the CLI's order."""
    defaults = RunConfig.__dataclass_fields__
    words = []
    for name, flag, options in run_flags():
        if name in SWEPT:
            continue
        value, default = getattr(config, name), defaults[name].default
        if name == "model":
            default = DEFAULT_MODEL
        if value == default or value is None:
            continue
        if options.get("action") in ("store_true", "store_false"):
            words.append(flag)
        elif isinstance(value, tuple):
            words += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return words


def join(words: list[str]) -> str:
    """Shell words as one line a person can paste (quoted where the shell needs it)."""
    return " ".join(shlex.quote(w) for w in words)
