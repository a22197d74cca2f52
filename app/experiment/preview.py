"""What Submit would queue, shown before anything is queued: the run count and each run's parameter counts."""

from __future__ import annotations

from moduletune.app.experiment.fields import error_field
from moduletune.app.experiment.form import Form, form_families, resolve_lr, sci, setting_values
from moduletune.app.experiment.model_info import counts, model_info
from moduletune.app.experiment.plan import FORM_LIMIT, layer_wise, plan, sweep_shape, to_configs
from moduletune.app.public.errors import visitor_message
from moduletune.tasks.submission import check_submission
from moduletune.tuning import modules
from moduletune.tuning.learning_rates import default_lr, lr_grid
from moduletune.tuning.methods import AdapterSettings


def form_adapter(form: Form) -> AdapterSettings:
    """The LoRA shape the form's Advanced settings ask for (blank: RunConfig's defaults), for exact counts."""
    asked = setting_values(form)
    return AdapterSettings(int(asked["lora_rank"]), float(asked["lora_alpha"]), float(asked["lora_dropout"]))


def preview(form: Form) -> dict:
    """What Submit would queue, before anything is queued: run count and per-run parameter counts.

    {"runs": N, "shape": "...", "model": ModelInfo, "rows": [{"modules", "layers", counts...}], "error": None}
    or {"error": message, "field": control} when the form is not valid yet."""
    try:
        planned = plan(form)
        # What Submit would refuse, said now: the settings, and the entry checks (a search on too few rows ...).
        check_submission(to_configs(form, planned[:1])[0])
    except Exception as err:  # a refusal beside its field; anything else in one line without internals
        return {
            "error": visitor_message(err, "preview this selection"),
            "field": error_field(err),
            "runs": 0,
            "rows": [],
        }
    info = model_info(form.model)
    first_task = planned[0].task
    adapter = form_adapter(form)
    rows, seen = [], set()
    each = len({p.layers for p in planned if layer_wise(p.modules)}) > 1 and (
        form.each_layer or str(form.layer_spec).strip().lower() == "each"
    )
    for p in planned:
        key = (p.modules, "each" if each and layer_wise(p.modules) else p.layers)
        if key in seen:
            continue
        seen.add(key)
        c = counts(info.name, first_task, p.modules, p.layers, form.train_head, adapter)
        shown = key[1] if key[1] != "each" else f"each (e.g. {p.layers})"
        rows.append({"modules": "+".join(p.modules), "layers": shown, "lr": run_lr_text(form, p.modules), **c})
    searches = len({(p.task, p.modules, p.layers) for p in planned}) if form.lr_search else 0
    return {
        "error": None,
        "field": None,
        "runs": len(planned),
        "searches": searches,
        "shape": sweep_shape(form, planned),
        "model": info,
        "task": first_task,
        "rows": rows,
    }


def run_lr_text(form: Form, module_set) -> str:
    """The lr a planned run trains at: the typed one, its family's default, or the grid a search tries."""

    if form.lr_search:
        grid = lr_grid(module_set)
        return f"search {sci(grid[0])}…{sci(grid[-1])} ({len(grid)})"
    typed = resolve_lr(form.lr, form_families(form))
    return sci(typed if typed is not None else default_lr(module_set))


def preview_markdown(view: dict) -> str:
    """The preview as Markdown: the run count first, then one line per module set."""
    if view.get("error"):
        return f"**Nothing to queue yet.** {view['error']}"
    n, info = view["runs"], view["model"]
    head = (
        f"### {n} run{'s' if n != 1 else ''} will be queued\n"
        f"{view['shape']} · model **{info.name}** ({info.model_type}, {info.num_layers} layers)"
    )
    if view.get("searches"):
        k = view["searches"]
        head += (
            f"\n\n🔎 First {k} learning-rate search{'es' if k != 1 else ''} (a race over each family's grid, "
            "chosen on a held-out 10% of the training rows; 1.25-2.5× one run each, see the README), then "
            "every seed at the chosen lr."
        )
    if n > FORM_LIMIT:
        head += f"\n\n⚠️ More than {FORM_LIMIT} runs: narrow the selection, or use the paper-study preset."
    lines = ["| module | layers | lr | module params | trainable (+ head) | % of model |", "|:--|:--|:--|--:|--:|--:|"]
    for r in view["rows"]:
        lines.append(
            f"| {modules.short_label(r['modules'])} | {r['layers']} | {r['lr']} | {r['module_params']:,} "
            f"| {r['trainable_params']:,} | {r['trainable_pct']:.4g}% |"
        )
    total = view["rows"][0]["total_params"] if view["rows"] else 0
    foot = f"\nCounts per run for {view['task']} (of {total:,} parameters in the model)."
    return head + "\n\n" + "\n".join(lines) + "\n" + foot
