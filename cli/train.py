"""The CLI commands that work in this process: `run` (one fine-tune, with a progress bar), `count`,
`magnitudes` and `report`."""

from __future__ import annotations

import json
import sys

from moduletune.tasks.registry import Registry
from moduletune.tuning import glue, modules
from moduletune.tuning.config import DEFAULT_MODEL
from moduletune.tuning.finals import final_config
from moduletune.tuning.flags import add_run_flags, config_from_args
from moduletune.tuning.glue_dirs import check_glue_dir
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.models import build_from_config, check_against_model, load_classifier, load_config
from moduletune.tuning.search import lr_search
from moduletune.tuning.trackers import Tracking, check_installed, run_label, track
from moduletune.tuning.verdict import check_searchable


def add_parser(sub) -> None:
    """Register the commands that work in this process: run, count, magnitudes, report."""
    p = sub.add_parser("run", help="fine-tune one module selection now, in this process")
    add_run_flags(p)
    p.add_argument("--output", default=None, help="write the artifact (trained tensors + config) here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("count", help="trainable-parameter counts without training")
    p.add_argument("--task", default="sst2")
    p.add_argument("--modules", default="layernorm")
    p.add_argument("--layers", default="all")
    p.add_argument("--model", default=None)
    p.add_argument("--no-head", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (lora:<families>)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("magnitudes", help="weight-magnitude statistics per module family and layer")
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_magnitudes)

    p = sub.add_parser(
        "report",
        help="the paper's findings from the registry: table, layer-wise scores, "
        "efficiency, |w| vs score (Spearman's rho)",
    )
    p.add_argument("--tasks", default=None, help="comma-separated GLUE tasks (default: every task with runs)")
    p.add_argument("--model", default=None, help="only runs of this model")
    p.add_argument(
        "--layers",
        default=None,
        help="only this layer choice in the table, e.g. all or 5 (default: every choice, each its own row)",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["md", "tex", "csv", "html"],
        help="md (Markdown), tex (a LaTeX booktabs table), csv (numeric), html (one self-contained page)",
    )
    p.add_argument("--output", required=True, help="the file to write")
    p.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from moduletune.tuning.artifacts import check_output_dir
    from moduletune.tuning.train import fine_tune

    config = config_from_args(args)
    if args.output is not None:
        check_output_dir(args.output)  # a bad path fails now, not after the whole run trained
    check_glue_dir(config.task, config.glue_dir)
    check_against_model(config)  # before anything heavy is loaded
    check_installed(config.report_to)  # ... and so is a tracker that is not installed
    check_searchable(config)  # ... and a search scored on too few rows to choose
    search = None
    if config.lr_search:  # before the run's own bar, so the two bars never interleave
        searching = track(config, run_label(config.to_dict()) + "-lr-search")
        search = run_search(config, quiet=args.quiet, tracking=searching)
        config = final_config(config, search)
    bar = step_bar(f"{config.task} {'+'.join(config.modules)}@{config.layers}", args.quiet)

    def on_event(event):
        if event["kind"] == "step":
            bar.step(event, loss=f"{event['loss']:.4f}", ex_s=f"{event['examples_per_second']:.0f}")
        elif event["kind"] == "eval":
            bar.write(f"step {event['step']}: " + ", ".join(f"{k}={v:.4f}" for k, v in event["metrics"].items()))

    tracking = track(config)
    try:
        result = fine_tune(config, tracking.wrap(on_event), output_dir=args.output)
        tracking.finish(result)
    finally:
        tracking.finish()  # a run that failed: its trackers are closed as failed (after a result: nothing)
    bar.close()
    out = result.to_dict()
    if search is not None:
        out["lr_search"] = search.to_dict()
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{result.task} {'+'.join(result.modules)} layers {result.layer_spec}: "
            f"{result.primary_metric_name}={result.primary_metric:.4f}  "
            + "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
        )
        print(
            f"trainable {result.trainable_params:,} of {result.total_params:,} ({result.trainable_pct:.4f}%); "
            f"module {result.module_params:,} ({result.module_pct:.4f}% of the encoder), head {result.head_params:,}"
        )
        print(f"{result.train_seconds:.1f}s training, {result.examples_per_second:.0f} examples/s on {result.device}")
        if result.artifact_dir:
            print(f"artifact: {result.artifact_dir}")
    return 0


def step_bar(desc: str, quiet: bool = False):
    """A tqdm bar on stderr that follows the engine's step events (bar.step(event, **postfix))."""
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, disable=quiet)

    def step(event: dict, **postfix) -> None:
        bar.total = event["total_steps"]
        bar.update(event["step"] - bar.n)
        bar.set_postfix(**postfix)

    bar.step = step
    # tqdm.write prints to stdout by default, which would break `--json` output: keep every line on stderr.
    bar.write = lambda text: tqdm.write(text, file=sys.stderr)
    return bar


def run_search(config, quiet: bool = False, tracking=None):
    """An lr search in this process with a progress bar; prints each candidate's held-out scores (and reports
    them to the trackers of `tracking`, a tuning.trackers.Tracking)."""

    bar = step_bar(f"lr search {'+'.join(config.modules)}@{config.layers}", quiet)

    def on_event(event):
        if event["kind"] == "step":
            bar.step(event, lr=f"{event['candidate_lr']:g}", loss=f"{event['loss']:.4f}")
        elif event["kind"] == "rung":
            bar.write(f"lr {event['lr']:g} at step {event['step']}: {event['metric']}={event['score']:.4f}")

    tracking = tracking or Tracking()
    try:
        result = lr_search(config, tracking.wrap(on_event))
        tracking.finish(result)
    finally:
        tracking.finish()
    bar.close()
    where = "held-out slice" if result.selection == "holdout" else "evaluation set (optimistic)"
    print(
        f"lr search: chose {result.chosen_lr:g} by {result.metric} on the {where}; cost {result.cost_ratio:.2f}x "
        f"one run (the plain grid: {result.grid_cost_ratio:.0f}x)\nlr search verdict: {result.verdict}: "
        f"{result.verdict_note}",
        file=sys.stderr,
    )
    return result


def cmd_count(args) -> int:
    config = load_config(args.model or DEFAULT_MODEL)
    num_labels = glue.get_task(args.task).num_labels
    model = build_from_config(config, num_labels=num_labels, on_meta=True)
    adapter = AdapterSettings(rank=args.lora_rank)
    sel = modules.select_parameters(model, args.modules, args.layers, not args.no_head, args.seed, adapter)
    out = {
        "model": args.model or DEFAULT_MODEL,
        "modules": list(modules.parse_families(args.modules)),
        "layers": list(modules.parse_layers(args.layers, modules.num_hidden_layers(config))),
        "num_layers": modules.num_hidden_layers(config),
        **sel.counts(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"module {out['module_params']:,} ({out['module_pct']:.4f}% of {out['encoder_params']:,}), "
            f"head {out['head_params']:,}, trainable {out['trainable_params']:,} "
            f"({out['trainable_pct']:.4f}% of {out['total_params']:,})"
        )
    return 0


def cmd_magnitudes(args) -> int:
    from moduletune.tuning import magnitudes

    model = load_classifier(args.model or DEFAULT_MODEL, 2)
    rows = magnitudes.magnitude_stats(model)
    summary = {kind: magnitudes.family_summary(rows, kind) for kind in ("weight", "bias")}
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model or DEFAULT_MODEL,
                    "hist_edges": magnitudes.HIST_EDGES.tolist(),
                    "summary": summary,
                    "rows": rows,
                }
            )
        )
    else:
        print(f"{'family':<18}{'mean |w| (weights)':>20}{'mean |b| (biases)':>20}")
        for family, value in sorted(summary["weight"].items(), key=lambda kv: -kv[1]):
            print(f"{family:<18}{value:>20.4f}{summary['bias'].get(family, float('nan')):>20.4f}")
    return 0


def cmd_report(args) -> int:
    from moduletune.app.study import report as study

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    report = study.report_from_registry(Registry(), tasks=tasks, model=args.model, layers=args.layers)
    if report.n_runs == 0:
        raise ValueError(
            "no finished runs to report"
            + (f" for {', '.join(tasks)}" if tasks else "")
            + "; queue some with `moduletune sweep` or the paper preset"
        )
    path = study.write_report(report, args.format, args.output)
    print(f"wrote {path} ({args.format}, {report.n_runs} runs, tasks {', '.join(report.tasks)})")
    return 0
