"""The paper's study as one preset: the families ticked in the form on all layers and on each layer alone, plus full
fine-tuning, each setting with its own searched lr (or one per family: the family scope); counted, estimated and
confirmed before it is queued as one study, at its full size or a quick one."""

from __future__ import annotations

from moduletune.app.experiment.form import Form, checked, form_families, form_tasks, parse_seeds, setting_values
from moduletune.app.experiment.model_info import model_info
from moduletune.app.experiment.plan import final_run_count, layer_wise, plan, search_configs, shape, to_configs
from moduletune.app.figures import eta
from moduletune.app.figures.labels import humanize_seconds
from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import public_limits
from moduletune.tuning.config import RunConfig
from moduletune.tuning.methods import METHOD_TABLE
from moduletune.tuning.modules import short_label

PAPER_FAMILIES = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm")
# The preset's baselines: each method on peft's default targets for BERT (LoRA: Q+V; (IA)³: K+V+FO).
BASELINES = tuple(tuple(f"{m.name}:{f}" for f in m.default_families) for m in METHOD_TABLE)
PRESET_LIMIT = 5000  # the paper-study preset, after its confirmation


def preset_families(form: Form) -> list[str]:
    """The families the preset studies: those ticked in the form (full fine-tuning, the reference, is added anyway)."""
    families = [f for f in form_families(form) if f != "full"]
    if not families:
        raise FormError("families", "tick at least one module family to study beside full fine-tuning")
    return families


def _parts(form: Form, quick: bool) -> tuple[Form, list[Form]]:
    """The preset's sweeps: the ticked families on all layers, on each layer alone (quick: the last one only), and
    full fine-tuning; quick also keeps only the first seed."""
    info = model_info(form.model)
    seeds = form.seeds if not quick else str(parse_seeds(form.seeds)[0])
    study = form.replace(
        families=preset_families(form),  # method-prefixed already (lora:query): the parts below say it themselves
        method="modules",
        together=False,
        lr=None,
        lr_search=True,
        layers=[str(i) for i in range(info.num_layers)],
        layer_spec="",
        each_layer=False,
        seeds=seeds,
    )
    single = study.replace(layer_spec=str(info.num_layers - 1)) if quick else study.replace(each_layer=True)
    parts = [study, single, study.replace(families=["full"], random_control=False)]
    if form.baselines:  # the parameter-efficient methods people compare with, each on all layers at its own lr
        parts += [study.replace(families=list(b), together=True, random_control=False) for b in BASELINES]
    return study, parts


def paper_study(form: Form, quick: bool = False) -> list[RunConfig]:
    """The paper's study on the form's tasks, model, seeds and subsampling: the ticked families (and random
    controls when asked) on all layers and on each layer alone (quick: on all layers and the last layer, the first
    seed only), plus full fine-tuning, each with its searched lr: one search per setting, or (scope family) per
    task and family on all layers; then every seed at the chosen lr."""
    study, parts = _parts(form, quick)
    runs = sum(shape(p).runs for p in parts)  # counted before anything is listed
    if runs > PRESET_LIMIT:
        raise FormError(
            None, f"the preset would queue {runs:,} runs, more than {PRESET_LIMIT:,}; choose fewer tasks or seeds"
        )
    return search_configs(to_configs(study, [r for p in parts for r in plan(p, limit=None)]), form.lr_search_scope)


def quick_study(form: Form) -> list[RunConfig]:
    """The preset at its quick size: all layers and the last layer alone, the first seed."""
    return paper_study(form, quick=True)


def preset_searches(form: Form, quick: bool = False) -> int:
    """How many searches the preset queues, counted without building any."""
    _, parts = _parts(form, quick)
    tasks = len(form_tasks(form))
    families = parts[0].families + [f"random:{f}" for f in parts[0].families if form.random_control]
    layered = sum(layer_wise((f,)) for f in families)
    baselines = len(BASELINES) if form.baselines else 0
    if form.lr_search_scope == "family":
        return tasks * (len(families) + 1 + baselines)
    per_layer = len(shape(parts[1]).specs)
    return tasks * (len(families) + layered * per_layer + 1 + baselines)


def paper_study_message(form: Form, registry=None) -> tuple[str, int]:
    """The confirmation text and the number of registry entries the full preset queues now (FormError if the form
    is bad): the searches, each of which then queues its runs. It gives the full study's time in both lr-search
    scopes and the quick size's, from this lab's measured throughput (or says there is no measurement yet)."""
    checked(form)
    limits = public_limits()
    if limits is not None and preset_searches(form) > limits.max_active_per_visitor:  # refused before building
        raise FormError(
            None,
            f"the preset would queue {preset_searches(form)} searches; this public demo "
            f"allows at most {limits.max_active_per_visitor} queued or running runs per visitor",
        )
    configs = paper_study(form)
    n, runs = len(configs), final_run_count(configs)
    info = model_info(form.model)
    tasks = form_tasks(form)
    seeds = parse_seeds(form.seeds)
    subsample = (
        f"{configs[0].max_train:,} training examples per run" if configs[0].max_train else "the full training sets"
    )
    families = " ".join(short_label((f,)) for f in preset_families(form))
    controls = " + random controls" if form.random_control else ""
    baselines = ""
    if form.baselines:
        rank = setting_values(form)["lora_rank"]
        baselines = f" + LoRA r={rank} on Q+V and (IA)³ on K+V+FO on all layers"
    scope = "per setting"
    if form.lr_search_scope == "family":
        scope = "per task and family (on all layers; its lr reused for each single layer)"
    head = (
        f"**The paper's study: {n} lr searches, then {runs} runs.** {families}{controls} × (all "
        f"{info.num_layers} layers + each layer alone) + full fine-tuning{baselines}, × {len(seeds)} seed(s) × "
        f"{len(tasks)} task(s) ({', '.join(tasks)}), on {info.name} with {subsample}. The learning rate is searched "
        f"{scope} (a race over its grid on a held-out 10% of the training rows), then every seed trains at it."
    )
    return "\n\n".join([head, time_lines(form, registry, info.name), "Queue it as one study?"]), n


def time_lines(form: Form, registry, model: str) -> str:
    """The full study's time per lr-search scope and the quick size's, each on one worker, and what it rests on."""
    throughput = eta.measured(registry, model) if registry is not None else eta.Throughput(None, 0, "")
    if not throughput.examples_per_second:
        return "No time estimate yet: this lab has no finished run on this model to measure its speed."
    sizes = []
    for label, f, quick in (
        ("full study, one search per setting", form.replace(lr_search_scope="setting"), False),
        ("full study, one search per family", form.replace(lr_search_scope="family"), False),
        ("quick size (all layers + the last layer, first seed)", form, True),
    ):
        configs = paper_study(f, quick)
        seconds = throughput.seconds(eta.planned_examples(configs, throughput.search_cost))
        counts = f"{len(configs)} searches, {final_run_count(configs)} runs"
        sizes.append(f"- {label}: {counts}, about **{humanize_seconds(seconds)}**")
    return (
        f"Time on one worker ({throughput.basis}; a search counted as {throughput.search_cost:.1f} runs):\n"
        + "\n".join(sizes)
    )
