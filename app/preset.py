"""The paper's study as one preset: every family on all layers and on each layer alone, plus full fine-tuning,
each setting with its own searched lr; counted, estimated and confirmed before it is queued."""

from __future__ import annotations

from dataclasses import replace

from moduletune.app.form import Form, FormError, checked, form_tasks, parse_seeds
from moduletune.app.model_info import model_info
from moduletune.app.plan import final_run_count, plan, search_configs, shape, to_configs
from moduletune.app.public import public_limits
from moduletune.tuning.config import RunConfig

PAPER_FAMILIES = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm")
PRESET_LIMIT = 5000  # the paper-study preset, after its confirmation


def paper_study(form: Form, lr_search: bool = True) -> list[RunConfig]:
    """The paper's study on the form's tasks, model, seeds and subsampling: Q K V AO FI FO LN (plus bias when
    ticked, and the random controls when asked) on all layers and on each layer alone, plus full fine-tuning,
    each with its own searched lr (one search per setting, then every seed at the chosen lr)."""
    info = model_info(form.model)
    families = list(PAPER_FAMILIES) + (["bias"] if "bias" in (form.families or []) else [])
    study = replace(
        form,
        families=families,
        together=False,
        lr=None,
        lr_search=lr_search,
        layers=[str(i) for i in range(info.num_layers)],
        layer_spec="",
        each_layer=False,
    )
    parts = [study, replace(study, each_layer=True), replace(study, families=["full"], random_control=False)]
    runs = sum(shape(p).runs for p in parts)  # counted before anything is listed
    if runs > PRESET_LIMIT:
        raise FormError(
            None, f"the preset would queue {runs:,} runs, more than {PRESET_LIMIT:,}; choose fewer tasks or seeds"
        )
    return search_configs(to_configs(study, [r for p in parts for r in plan(p, limit=None)]))


def preset_searches(form: Form) -> int:
    """How many searches the preset queues (one per setting), counted without building any."""
    info = model_info(form.model)
    families = len(PAPER_FAMILIES) + ("bias" in (form.families or []))
    controls = families if form.random_control else 0
    return len(form_tasks(form)) * ((families + controls) * (1 + info.num_layers) + 1)


# Training rows per GLUE task (for time estimates when a run uses the whole training set).
GLUE_TRAIN_ROWS = {
    "cola": 8551,
    "sst2": 67349,
    "mrpc": 3668,
    "stsb": 5749,
    "qqp": 363846,
    "mnli": 392702,
    "qnli": 104743,
    "rte": 2490,
    "wnli": 635,
}
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
        raise FormError(
            None,
            f"the preset would queue {preset_searches(form)} searches; this public demo "
            f"allows at most {limits.max_active_per_visitor} queued or running runs per visitor",
        )
    configs = paper_study(form)
    n = len(configs)
    runs = final_run_count(configs)
    info = model_info(form.model)
    tasks = form_tasks(form)
    seeds = parse_seeds(form.seeds)
    subsample = (
        f"{configs[0].max_train} training examples per run" if configs[0].max_train else "the full training sets"
    )
    families = "Q K V AO FI FO LN" + (" bias" if "bias" in (form.families or []) else "")
    controls = " + random controls" if form.random_control else ""
    rate = measured_throughput(registry, info.name)
    if rate:
        from moduletune.app.labels import humanize_seconds

        eta = (
            f"About **{humanize_seconds(estimated_seconds(configs, rate))}** of training on one worker "
            f"(this lab's median {rate:.0f} examples/s on {info.name})."
        )
    else:
        eta = "No time estimate yet: this lab has no finished run on this model to measure its speed."
    text = (
        f"**The paper's study: {n} lr searches, then {runs} runs.** {families}{controls} × (all "
        f"{info.num_layers} layers + each layer alone) + full fine-tuning, × {len(seeds)} seed(s) × "
        f"{len(tasks)} task(s) ({', '.join(tasks)}), on {info.name} with {subsample}. Each setting first "
        f"searches its own learning rate (successive halving on a held-out 10% of the training rows), then "
        f"trains every seed at it. {eta} Queue them?"
    )
    return text, n
