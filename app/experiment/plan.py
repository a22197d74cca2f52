"""A sweep from the form: tasks x module sets x layer choices x seeds, counted before it is listed, then
validated RunConfigs (an lr search is one config per setting over every seed)."""

from __future__ import annotations

from dataclasses import dataclass

from moduletune.app.experiment.fields import control_of
from moduletune.app.experiment.form import (
    Form,
    checked,
    chosen_layers,
    compact_spec,
    form_families,
    form_tasks,
    parse_seeds,
    setting_values,
)
from moduletune.app.experiment.model_info import model_info
from moduletune.app.public.checks import FormError
from moduletune.tuning import modules
from moduletune.tuning.config import ConfigError, RunConfig
from moduletune.tuning.finals import planned_finals
from moduletune.tuning.text import one_line

FORM_LIMIT = 200  # runs one click of Submit may queue; larger studies go through the preset


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep before it is validated: what varies across the sweep."""

    task: str
    modules: tuple[str, ...]
    layers: str
    seed: int


def module_sets(form: Form, families: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One set per run: each family alone, or all together; plus random controls if asked."""
    sets = [families] if form.together else [(f,) for f in families]
    if form.random_control:
        sets += [(f"random:{f}",) for f in families if f in modules.LAYER_FAMILIES]
    return list(dict.fromkeys(sets))


def layer_wise(module_set) -> bool:
    return any(f.split(":")[-1] in modules.LAYER_FAMILIES for f in module_set)


@dataclass(frozen=True)
class Shape:
    """A sweep before it is expanded: its parts, and how many runs they multiply into."""

    tasks: list
    sets: list
    specs: list
    seeds: list

    @property
    def runs(self) -> int:
        per_task = sum(len(self.specs) if layer_wise(s) else 1 for s in self.sets)
        return len(self.tasks) * per_task * len(self.seeds)


def shape(form: Form) -> Shape:
    """The sweep's parts from the form (cheap: nothing is multiplied out); FormError names the field at fault."""
    checked(form)
    tasks = form_tasks(form)
    families = form_families(form)
    info = model_info(form.model)
    seeds = parse_seeds(form.seeds)
    sets = module_sets(form, families)
    specs = ["all"]
    if any(layer_wise(s) for s in sets):
        ids, each = chosen_layers(form, info.num_layers)
        specs = [str(i) for i in ids] if each else [compact_spec(ids, info.num_layers)]
    return Shape(tasks, sets, specs, seeds)


def plan(form: Form, limit: int | None = FORM_LIMIT) -> list[PlannedRun]:
    """The sweep: tasks x module sets x layer choices x seeds (families that ignore layers get one run).

    The runs are counted before they are listed: a selection over `limit` is refused without expanding it."""
    found = shape(form)
    if limit is not None and found.runs > limit:
        raise FormError(
            None,
            f"this selection would queue {found.runs:,} runs, more than {limit:,}; narrow the tasks, families, "
            "layers or seeds, or use the paper-study preset",
        )
    return sweep_points(found.tasks, found.sets, found.specs, found.seeds)


def sweep_points(tasks, sets, specs, seeds) -> list[PlannedRun]:
    """tasks x module sets x layer specs x seeds, for the UI and the CLI alike; a set whose families
    ignore layers (embeddings, classifier, full) gets one run over "all" instead of one per spec."""
    return [
        PlannedRun(task, tuple(s), spec, seed)
        for task in tasks
        for s in sets
        for spec in (specs if layer_wise(s) else ["all"])
        for seed in seeds
    ]


def to_configs(form: Form, planned: list[PlannedRun]) -> list[RunConfig]:
    """RunConfigs (each validated as it is made) for planned runs with the form's settings; FormError names the
    control at fault, from the field a ConfigError names.

    With lr search on, the typed lr is ignored (the search chooses it) and the configs are search configs."""
    settings = setting_values(form)
    out = []
    for p in planned:
        try:
            out.append(RunConfig(task=p.task, modules=p.modules, layers=p.layers, seed=p.seed, **settings))
        except ConfigError as err:
            raise FormError(control_of(err.field) or "settings", str(err)) from None
        except (TypeError, ValueError) as err:
            raise FormError("settings", one_line(err)) from None
    return out


def build_configs(form: Form) -> list[RunConfig]:
    """The form's runs as validated RunConfigs (one per sweep point; with lr search, one search per point
    over every seed, or per task and family with the family scope)."""
    return search_configs(to_configs(form, plan(form)), form.lr_search_scope)


SCOPES = ("setting", "family")  # one lr search per setting, or per task and family (on all layers)


def search_configs(configs: list[RunConfig], scope: str = "setting") -> list[RunConfig]:
    """Search configs grouped over seeds: one search per setting (at the first seed), whose chosen lr then
    trains every seed (extra["final_seeds"]); plain configs pass through unchanged.

    scope "family": one search per task and family, on all layers, whose lr also trains that family's other layer
    choices (extra["final_layers"]): a cheaper study whose single-layer cells share their family's lr."""
    if scope not in SCOPES:
        raise FormError("settings", f"lr search scope must be one of {', '.join(SCOPES)}, got {str(scope)[:40]!r}")
    groups: dict[object, list[RunConfig]] = {}
    for c in configs:
        if not c.lr_search:
            groups[id(c)] = [c]
            continue
        at = c.replace(seed=0, layers="all") if scope == "family" else c.replace(seed=0)
        groups.setdefault(at.to_json(), []).append(c)
    out = []
    for g in groups.values():
        first = g[0]
        if not first.lr_search:
            out.append(first)
            continue
        extra = {**first.extra, "final_seeds": list(dict.fromkeys(c.seed for c in g))}
        if scope == "family":
            extra["final_layers"] = list(dict.fromkeys(c.layers for c in g))
            first = first.replace(layers="all")
        out.append(first.replace(extra=extra))
    return out


def final_run_count(configs: list[RunConfig]) -> int:
    """How many reported runs these configs end in (a search ends in one run per final seed and layer choice)."""
    return sum(planned_finals(c) if c.lr_search else 1 for c in configs)


def sweep_shape(form: Form, planned: list[PlannedRun]) -> str:
    """'2 module sets × 6 layers × 3 seeds × 1 task' (what multiplies into the run count)."""

    def n(label, values):
        k = len(set(values))
        return f"{k} {label}{'' if k == 1 else 's'}"

    if not planned:
        return "nothing"
    return " × ".join(
        [
            n("task", [p.task for p in planned]),
            n("module set", [p.modules for p in planned]),
            n("layer choice", [p.layers for p in planned]),
            n("seed", [p.seed for p in planned]),
        ]
    )
