"""`moduletune serve | worker | run | submit | sweep | runs | show | cancel | retry | report | count | magnitudes`."""

from __future__ import annotations

import argparse
import json
import sys

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def run_flags() -> list[tuple[str, str, dict]]:
    """(field, flag, argparse options) for every RunConfig setting a person sets, read from its Knob (as
    nanoGPT's configurator derives its overrides from the config): one place says what a setting is."""
    from moduletune.tuning.config import KNOBS, RunConfig

    defaults = RunConfig.__dataclass_fields__
    types = {"int": int, "number": float, "floats": _floats}
    out = []
    for name, k in KNOBS.items():
        if k.internal or k.flag is None:
            continue
        flag = k.flag or "--" + name.replace("_", "-")
        default = defaults[name].default
        if k.kind == "bool":
            # A setting on by default is turned off by its flag (--no-head, --no-cuda-graphs).
            options = dict(action="store_false" if default else "store_true", dest=name)
            if default and not flag.startswith("--no-"):
                flag = "--no-" + flag[2:]
        else:
            options = dict(type=types.get(k.kind, str), default=None if name == "model" else default, dest=name)
            if k.choices:
                options["choices"] = list(k.choices)
            if name == "modules":
                options["default"] = "+".join(default)
        out.append((name, flag, {**options, "help": k.help}))
    return out


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe one run (shared by run, submit and sweep), one per RunConfig setting."""
    for _name, flag, options in run_flags():
        p.add_argument(flag, **options)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 1e-4,1e-3,1e-2, got {text!r}"
        ) from None


def config_from_args(args, **overrides):
    """A validated RunConfig from parsed flags."""
    from moduletune.tuning.config import DEFAULT_MODEL, RunConfig

    values = {name: getattr(args, name) for name, _flag, _options in run_flags()}
    values["model"] = values["model"] or DEFAULT_MODEL
    return RunConfig(**{**values, **overrides})


def cmd_run(args) -> int:
    from moduletune.tuning.models import check_against_model
    from moduletune.tuning.train import fine_tune

    config = config_from_args(args)
    check_against_model(config)  # before anything heavy is loaded
    search = None
    if config.lr_search:  # before the run's own bar, so the two bars never interleave
        from moduletune.tuning.search import final_config

        search = run_search(config, quiet=args.quiet)
        config = final_config(config, search)
    bar = step_bar(f"{config.task} {'+'.join(config.modules)}@{config.layers}", args.quiet)

    def on_event(event):
        if event["kind"] == "step":
            bar.step(event, loss=f"{event['loss']:.4f}", ex_s=f"{event['examples_per_second']:.0f}")
        elif event["kind"] == "eval":
            bar.write(f"step {event['step']}: " + ", ".join(f"{k}={v:.4f}" for k, v in event["metrics"].items()))

    result = fine_tune(config, on_event, output_dir=args.output)
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


def run_search(config, quiet: bool = False):
    """An lr search in this process with a progress bar; prints each candidate's held-out scores."""
    from moduletune.tuning.search import lr_search

    bar = step_bar(f"lr search {'+'.join(config.modules)}@{config.layers}", quiet)

    def on_event(event):
        if event["kind"] == "step":
            bar.step(event, lr=f"{event['candidate_lr']:g}", loss=f"{event['loss']:.4f}")
        elif event["kind"] == "rung":
            bar.write(f"lr {event['lr']:g} at step {event['step']}: {event['metric']}={event['score']:.4f}")

    result = lr_search(config, on_event)
    bar.close()
    where = "held-out slice" if result.selection == "holdout" else "evaluation set (optimistic)"
    print(
        f"lr search: chose {result.chosen_lr:g} by {result.metric} on the {where}; cost {result.cost_ratio:.2f}x "
        f"one run (the plain grid: {result.grid_cost_ratio:.0f}x)",
        file=sys.stderr,
    )
    return result


def cmd_count(args) -> int:
    from moduletune.tuning import glue, modules
    from moduletune.tuning.config import DEFAULT_MODEL
    from moduletune.tuning.models import build_from_config, load_config

    config = load_config(args.model or DEFAULT_MODEL)
    num_labels = glue.get_task(args.task).num_labels
    model = build_from_config(config, num_labels=num_labels, on_meta=True)
    sel = modules.select_parameters(model, args.modules, args.layers, not args.no_head, args.seed)
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
    from moduletune.tuning.config import DEFAULT_MODEL
    from moduletune.tuning.models import load_classifier

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


# ---------------------------------------------------------------------------------------------- the queue

SWEEP_LIMIT = 100  # sweeps larger than this need --yes


def add_queue_flags(p: argparse.ArgumentParser) -> None:
    """Flags of queued runs beyond the run flags (shared by submit and sweep)."""
    p.add_argument("--submitter", default=None, help="who submitted it (default: the OS user)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_submit(args) -> int:
    from moduletune.tasks.registry import Registry

    config = config_from_args(args)
    if config.lr_search:
        config = config.replace(extra={**config.extra, "final_seeds": [config.seed]})
    run_id = Registry().submit(config, submitter=args.submitter)
    print(json.dumps({"id": run_id, "status": "queued"}) if args.json else run_id)
    return 0


def sweep_configs(args) -> list:
    """The cross product tasks x module sets x layer specs x seeds, as validated RunConfigs.

    --modules is a comma list of module sets (one run each; '+' trains families together);
    --layers each means one run per layer (families that ignore layers get one run)."""
    import copy

    from moduletune.app.form import parse_seeds
    from moduletune.app.plan import search_configs, sweep_points
    from moduletune.tuning import modules
    from moduletune.tuning.config import DEFAULT_MODEL
    from moduletune.tuning.models import load_config

    split = lambda text: [part.strip() for part in str(text).split(",") if part.strip()]  # noqa: E731
    task_names = split(args.tasks or args.task)
    module_sets = [modules.parse_families(s.split("+")) for s in split(args.modules)]
    seeds = parse_seeds(args.seeds if args.seeds is not None else args.seed)
    if not task_names or not module_sets:
        raise ValueError("a sweep needs at least one task, one module set and one seed")
    each = args.layers.strip().lower() == "each"
    num_layers = modules.num_hidden_layers(load_config(args.model or DEFAULT_MODEL)) if each else None
    specs = [str(i) for i in range(num_layers)] if each else [args.layers]
    configs = []
    for point in sweep_points(task_names, module_sets, specs, seeds):
        ns = copy.copy(args)
        ns.task, ns.modules, ns.layers, ns.seed = point.task, "+".join(point.modules), point.layers, point.seed
        configs.append(config_from_args(ns))
    return search_configs(configs)  # with --lr-search: one search per setting, over every seed


def cmd_sweep(args) -> int:
    import uuid

    from moduletune.tasks.registry import Registry

    configs = sweep_configs(args)  # submit_many checks every run before it queues any
    if len(configs) > SWEEP_LIMIT and not args.yes:
        raise ValueError(
            f"this sweep would queue {len(configs)} runs, more than the limit of {SWEEP_LIMIT}; "
            "pass --yes to queue them all, or narrow the tasks, modules, layers or seeds"
        )
    sweep_id = uuid.uuid4().hex[:12]
    ids = Registry().submit_many(configs, submitter=args.submitter, sweep_id=sweep_id)
    searches = sum(c.lr_search for c in configs)
    if args.json:
        print(json.dumps({"sweep_id": sweep_id, "queued": len(ids), "ids": ids, "searches": searches}))
    elif searches:
        from moduletune.app.plan import final_run_count

        print(
            f"queued {len(ids)} lr searches (sweep {sweep_id}, ids {ids[0]}-{ids[-1]}); each queues its runs at "
            f"the chosen lr ({final_run_count(configs)} in all)"
        )
    else:
        print(f"queued {len(ids)} runs (sweep {sweep_id}, ids {ids[0]}-{ids[-1]})")
    return 0


RUNS_TABLE = [
    ("id", 5),
    ("status", 11),
    ("task", 5),
    ("kind", 9),
    ("family", 9),
    ("layers", 7),
    ("seed", 4),
    ("lr", 8),
    ("progress", 12),
    ("metric", 22),
    ("worker", 20),
    ("queued_at", 20),
]


def _table_cell(run: dict, key: str) -> str:
    if key == "progress":
        total = run["total_steps"]
        return f"{run['step']}/{total}" if total else "-"
    if key == "metric":
        if run["primary_metric"] is None:
            return "-"
        flag = " (at chance)" if run["learned"] is False else ""
        return f"{run['primary_metric_name']}={run['primary_metric']:.4f}{flag}"
    if key == "lr":
        return f"{run['lr']:g}" if run["lr"] is not None else "-"
    if key == "queued_at":
        return (run["queued_at"] or "-").replace("T", " ")[:19]
    value = run[key]
    return "-" if value is None else str(value)


def cmd_runs(args) -> int:
    from moduletune.tasks.registry import Registry

    rows = Registry().list_runs(status=args.status, task=args.task, sweep_id=args.sweep, limit=args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    print("  ".join(f"{name.upper():<{width}}" for name, width in RUNS_TABLE).rstrip())
    for run in rows:
        print("  ".join(f"{_table_cell(run, name):<{width}}" for name, width in RUNS_TABLE).rstrip())
    return 0


def cmd_show(args) -> int:
    from moduletune.tasks.registry import Registry

    run = Registry().get(args.id)
    if args.json:
        print(json.dumps(run))
        return 0
    for key, value in run.items():
        if key in ("config", "result") or value is None:
            continue
        print(f"{key:<20}{value}")
    print(f"{'config':<20}{json.dumps(run['config'], sort_keys=True)}")
    if run["result"]:
        print(f"{'metrics':<20}{json.dumps(run['result'].get('metrics'))}")
    return 0


def cmd_cancel(args) -> int:
    from moduletune.tasks.registry import Registry

    status = Registry().request_cancel(args.id)
    print(json.dumps({"id": args.id, "status": status}) if args.json else f"run {args.id}: {status}")
    return 0


def cmd_retry(args) -> int:
    from moduletune.tasks.registry import Registry

    new_id = Registry().retry(args.id, submitter=args.submitter)
    print(json.dumps({"id": new_id, "status": "queued", "retry_of": args.id}) if args.json else new_id)
    return 0


def cmd_worker(args) -> int:
    import logging

    from moduletune.tasks.worker import run_worker

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
    return run_worker(
        device=args.device, workers=args.workers, worker_type=args.worker_type, heartbeat_timeout=args.heartbeat_timeout
    )


def cmd_serve(args) -> int:
    from moduletune.app import public
    from moduletune.app.server import serve

    limits = public.PublicLimits.from_env() if args.public or public.enabled() else None
    return serve(host=args.host, port=args.port, worker=not args.no_worker, share=args.share, public=limits) or 0


def cmd_report(args) -> int:
    from moduletune.app import study
    from moduletune.tasks.registry import Registry

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moduletune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("magnitudes", help="weight-magnitude statistics per module family and layer")
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_magnitudes)

    p = sub.add_parser("submit", help="queue one run for a worker; prints its id")
    add_run_flags(p)
    add_queue_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("sweep", help="queue the cross product of tasks, module sets, layers and seeds")
    add_run_flags(p)
    add_queue_flags(p)
    p.add_argument("--tasks", default=None, help="comma-separated GLUE tasks (default: --task)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: --seed)")
    p.add_argument("--yes", action="store_true", help=f"queue a sweep of more than {SWEEP_LIMIT} runs")
    p.set_defaults(func=cmd_sweep)
    for action in p._actions:
        if action.dest == "modules":
            action.help = "comma-separated module sets, one run each (Q,K,V,LN,full; '+' trains families together)"
        elif action.dest == "layers":
            action.help = "all, each (one run per layer), or a spec like 0-3,11 / last:4"

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

    p = sub.add_parser("runs", help="list runs in the registry")
    p.add_argument("--status", default=None, help="queued running succeeded failed cancelled interrupted")
    p.add_argument("--task", default=None)
    p.add_argument("--sweep", default=None, help="only the runs of this sweep id")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="everything about one run")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cancel", help="cancel a queued run, or stop a running one at its next step")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", help="queue a failed, cancelled or interrupted run again as a new run")
    p.add_argument("id", type=int)
    p.add_argument("--submitter", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("worker", help="train queued runs (one worker per GPU; many machines may share a queue)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N for runs that say auto (default: auto)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once on this machine")
    p.add_argument(
        "--worker-type",
        default="process",
        choices=["process", "thread"],
        help="process (default: each run in a forked process) or thread",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=None,
        help="seconds without a heartbeat before a running run counts as dead "
        "(default: MODULETUNE_HEARTBEAT_TIMEOUT or 60)",
    )
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="the web app (Gradio), with an embedded worker unless --no-worker")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="serve only the UI; runs wait for separate `moduletune worker` processes",
    )
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument(
        "--public",
        action="store_true",
        help="the public demo (also MODULETUNE_PUBLIC=1): allow-listed models only, per-visitor and "
        "queue quotas, capped epochs/examples/length (MODULETUNE_PUBLIC_* variables, see "
        "app/public.py), cancel/retry on a visitor's own runs, no submitter shown",
    )
    p.set_defaults(func=cmd_serve)

    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as err:
        print(f"moduletune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moduletune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
