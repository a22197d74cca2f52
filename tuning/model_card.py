"""The model card (README.md) of an exported run: the Hub's metadata front matter, then what was trained, how well,
with which settings and how to load it, so a pushed repo explains itself."""

from __future__ import annotations

import json

from moduletune.tuning import glue, methods, modules
from moduletune.tuning.config import DEFAULT_MODEL, RunConfig
from moduletune.tuning.models import EMBEDDED_NAMES, HUB_ID, is_local_path

EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the embedded model's name on the Hub
# moduletune's metric names -> the Hub's metric ids (the `metrics:` list and model-index entries).
HUB_METRICS = {
    "accuracy": "accuracy",
    "f1": "f1",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
    "matthews_correlation": "matthews_correlation",
}
LIBRARY = {"peft": "peft", "transformers": "transformers"}


def hub_base_model(name: str) -> str | None:
    """The Hub id of a run's base model: the embedded MiniLM's, a Hub id as typed, None for a local folder."""

    name = (name or DEFAULT_MODEL).strip()
    if name.lower() in EMBEDDED_NAMES:
        return EMBEDDED_HUB_ID
    if is_local_path(name) or not HUB_ID.match(name):
        return None
    return name


def moduletune_version() -> str:
    """The installed moduletune's version (a source checkout without an install says so)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moduletune")
    except PackageNotFoundError:
        return "unknown (not installed)"


def metric_split(task: glue.GlueTask, metric: str) -> tuple[str, str]:
    """(plain metric name, evaluation split): MNLI's accuracy_mismatched -> (accuracy, validation_mismatched)."""
    for split in task.eval_splits:
        suffix = "_" + split.removeprefix("validation_")
        if len(task.eval_splits) > 1 and metric.endswith(suffix):
            return metric.removesuffix(suffix), split
    return metric, task.eval_splits[0]


def eval_results(config: RunConfig, task: glue.GlueTask, result: dict | None) -> list:
    """model-index entries, only for scores on a task's whole validation split: a sample or a held-out slice of the
    training rows is not the benchmark the Hub's leaderboards compare, so those scores stay in the card's text."""
    from huggingface_hub import EvalResult

    if not result or config.eval_on != "validation" or config.max_eval is not None:
        return []
    out = []
    for name, value in (result.get("metrics") or {}).items():
        metric, split = metric_split(task, name)
        if value is None or metric not in HUB_METRICS:
            continue
        out.append(
            EvalResult(
                task_type="text-classification",
                dataset_type=glue.HUB_ID,
                dataset_name=f"GLUE {task.folder}",
                dataset_config=task.name,
                dataset_split=split,
                metric_type=HUB_METRICS[metric],
                metric_name=name,
                metric_value=round(float(value), 4),
            )
        )
    return out


def front_matter(config: RunConfig, task: glue.GlueTask, result: dict | None, fmt: str, title: str) -> str:
    """The YAML metadata the Hub reads: base model, library, tags, datasets, metrics and (when fair) model-index."""
    from huggingface_hub import ModelCardData

    tags = ["moduletune", "module-tuning", "glue", task.name, "text-classification"]
    tags += ["peft", "ln-tuning"] if fmt == "peft" else []
    results = eval_results(config, task, result)
    data = ModelCardData(
        base_model=hub_base_model(config.model),
        library_name=LIBRARY[fmt],
        pipeline_tag="text-classification",
        tags=tags,
        datasets=[glue.HUB_ID],
        metrics=sorted({HUB_METRICS[metric_split(task, m)[0]] for m in task.metrics}),
        model_name=title if results else None,
        eval_results=results or None,
    )
    return data.to_yaml()


def usage(config: RunConfig, task: glue.GlueTask, fmt: str, repo_id: str | None) -> str:
    """How to load the export, as a code block."""
    where = repo_id or "path/to/this/folder"
    if fmt == "transformers":
        code = (
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'model = AutoModelForSequenceClassification.from_pretrained("{where}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")'
        )
    else:
        base = hub_base_model(config.model) or config.model
        code = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'base = AutoModelForSequenceClassification.from_pretrained("{base}", num_labels={task.num_labels})\n'
            f'model = PeftModel.from_pretrained(base, "{where}")  # the trained modules and head replace the base\'s\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")'
        )
    return f"```python\n{code}\n```"


def results_text(task: glue.GlueTask, result: dict | None, config: RunConfig) -> list[str]:
    """The run's scores as a Markdown table, with where they were measured and whether the run learned."""
    if not result or not result.get("metrics"):
        return ["No evaluation was recorded with this artifact."]
    on = (
        f"a held-out {config.holdout_fraction:g} of the training rows"
        if config.eval_on == "holdout"
        else " and ".join(task.eval_splits)
    )
    lines = [
        f"Evaluated on {result.get('eval_examples', '?'):,} examples of {on}"
        + (" (a seeded sample)." if config.max_eval is not None and config.eval_on != "holdout" else "."),
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in result["metrics"].items() if isinstance(v, (int, float))]
    if result.get("chance_metric") is not None:
        lines += ["", f"Chance level ({result.get('primary_metric_name')}): {result['chance_metric']:.4f}."]
    if result.get("learned") is False:
        lines += ["", f"moduletune marks this run as **not learned**: {result.get('learned_note', 'at chance')}."]
    return lines


def card_config(config: RunConfig) -> dict:
    """The run's settings as the card shows them: the learning rate it trained at (a family default included),
    and no path of this machine (a local model or GLUE folder is named, not located)."""
    shown = config.to_dict()
    shown["lr"] = config.learning_rate
    if shown.get("glue_dir"):
        shown["glue_dir"] = "(a local GLUE folder)"
    if hub_base_model(config.model) is None:
        shown["model"] = f"(a local model: {local_name(config.model)})"
    return shown


def local_name(path: str) -> str:
    """A local model folder's last part: what a card may say about a path on this machine."""
    return str(path).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def model_card(
    config: RunConfig,
    counts: dict,
    result: dict | None,
    fmt: str,
    target_modules: list[str] | None = None,
    repo_id: str | None = None,
) -> str:
    """README.md for an exported run: front matter, the task, trainable parameters and %, the scores, how to load
    it, the run's config and the moduletune version that made it."""
    task = glue.get_task(config.task)
    families = modules.short_label(config.modules)
    base = hub_base_model(config.model) or f"a local model ({local_name(config.model)})"
    title = f"{base.rsplit('/', 1)[-1]} {families} (layers {config.layers}) on GLUE {task.folder}"
    head = "and the classifier head " if config.train_head or config.modules == ("classifier",) else ""
    lines = [
        "---",
        front_matter(config, task, result, fmt, title).strip(),
        "---",
        "",
        f"# {title}",
        "",
        f"{base} fine-tuned on GLUE {task.folder} ({task.name}) with "
        f"moduletune, training only **{families}** in layers `{config.layers}` {head}"
        "while every other weight stayed at its pre-trained value.",
        "",
        "## Task",
        "",
        f"GLUE {task.folder}: "
        + (
            "regression of a similarity score (0-5)"
            if task.is_regression
            else f"classification into {', '.join(task.label_names)}"
        )
        + f" from {' and '.join(task.text_columns)}.",
        "",
        "## Trainable parameters",
        "",
        f"- trained: {counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"({counts['trainable_pct']:.4f}%)",
        f"- the module ({families}): {counts['module_params']:,} ({counts['module_pct']:.4f}% of the encoder)",
        f"- the classifier head: {counts['head_params']:,}"
        if counts["head_params"]
        else "- the classifier head: frozen (--no-head) at the fresh head the run's seed drew; the export holds it",
    ]
    method = methods.method_of(config.modules[0])
    if fmt == "peft" and method is not None:
        kind = (
            f"`LoraConfig` (r={config.lora_rank}, alpha={config.lora_alpha:g})"
            if method.name == "lora"
            else "`IA3Config`"
        )
        lines += [
            "",
            f"The adapter is peft's own {method.label}: an {kind} on these {len(target_modules or [])} modules, "
            "with the head saved whole (`modules_to_save`):",
            "",
            *[f"- `{name}`" for name in target_modules or []],
        ]
    elif fmt == "peft":
        lines += [
            "",
            f"The adapter is a peft `LNTuningConfig`: a trained copy of each of these {len(target_modules or [])} "
            "modules replaces the base model's, and the head is saved whole (`modules_to_save`):",
            "",
            *[f"- `{name}`" for name in target_modules or []],
        ]
    lines += ["", "## Results", "", *results_text(task, result, config), "", "## How to load it", ""]
    lines += [usage(config, task, fmt, repo_id), "", "## The run's config", ""]
    lines += ["```json", json.dumps(card_config(config), indent=2, sort_keys=True), "```", ""]
    lines += [f"Exported by moduletune {moduletune_version()}.", ""]
    return "\n".join(lines)
