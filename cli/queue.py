"""`moduletune submit | sweep | cancel | retry`: runs into the queue (one, or a sweep as a study) and out of it."""

from __future__ import annotations

import argparse
import json

from moduletune.app.experiment.form import parse_seeds
from moduletune.app.experiment.plan import search_configs, sweep_points
from moduletune.cli import args as cli_args
from moduletune.tasks.registry import Registry
from moduletune.tasks.studies import default_name, spec_of
from moduletune.tasks.submission import retry, submit, submit_study
from moduletune.tuning import modules
from moduletune.tuning.config import DEFAULT_MODEL
from moduletune.tuning.flags import add_run_flags, config_from_args
from moduletune.tuning.models import load_config

SWEEP_LIMIT = 100  # sweeps larger than this need --yes


def add_parser(sub) -> None:
    """Register submit, sweep, cancel and retry."""
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
    p.add_argument("--name", default=None, help="the study's name (default: made from what it asks)")
    p.add_argument(
        "--lr-search-scope",
        default="setting",
        choices=["setting", "family"],
        help="with --lr-search: one search per setting (default), or per task and family on all layers, its lr "
        "reused for that family's single-layer settings (cheaper; those cells share their family's lr)",
    )
    p.set_defaults(func=cmd_sweep)
    for action in p._actions:
        if action.dest == "modules":
            action.help = "comma-separated module sets, one run each (Q,K,V,LN,full; '+' trains families together)"
        elif action.dest == "layers":
            action.help = "all, each (one run per layer), or a spec like 0-3,11 / last:4"

    p = sub.add_parser("cancel", help="cancel a queued run, or stop a running one at its next step")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", help="queue a failed, cancelled or interrupted run again as a new run")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("--submitter", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)


def add_queue_flags(p: argparse.ArgumentParser) -> None:
    """Flags of queued runs beyond the run flags (shared by submit and sweep)."""
    p.add_argument("--submitter", default=None, help="who submitted it (default: the OS user)")
    cli_args.add_tag_flags(p, "tag each run with TAG (repeat for more): letters, digits, - _ . : (40 at most)")
    p.add_argument("--note", default=None, help="a note on each run (2,000 characters at most)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_submit(args) -> int:
    config = config_from_args(args)
    if config.lr_search:
        config = config.replace(extra={**config.extra, "final_seeds": [config.seed]})
    run_id = submit(Registry(), config, submitter=args.submitter, tags=args.tags, note=args.note)
    print(json.dumps({"id": run_id, "status": "queued"}) if args.json else run_id)
    return 0


def sweep_configs(args) -> list:
    """The cross product tasks x module sets x layer specs x seeds, as validated RunConfigs.

    --modules is a comma list of module sets (one run each; '+' trains families together);
    --layers each means one run per layer (families that ignore layers get one run); with --lr-search, one
    search per setting, or per task and family (--lr-search-scope family)."""
    import copy

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
    return search_configs(configs, args.lr_search_scope)  # with --lr-search: one search per setting, over every seed


def cmd_sweep(args) -> int:
    import uuid

    configs = sweep_configs(args)  # submit_study checks every run before it queues any
    if len(configs) > SWEEP_LIMIT and not args.yes:
        raise ValueError(
            f"this sweep would queue {len(configs)} runs, more than the limit of {SWEEP_LIMIT}; "
            "pass --yes to queue them all, or narrow the tasks, modules, layers or seeds"
        )
    sweep_id = uuid.uuid4().hex[:12]
    spec = spec_of(configs, "sweep", **({"scope": args.lr_search_scope} if args.lr_search else {}))
    study_id, ids = submit_study(
        Registry(),
        configs,
        args.name or default_name(spec),
        spec,
        submitter=args.submitter,
        tags=args.tags,
        note=args.note,
        sweep_id=sweep_id,
    )
    searches = sum(c.lr_search for c in configs)
    if args.json:
        out = {"study_id": study_id, "sweep_id": sweep_id, "queued": len(ids), "ids": ids, "searches": searches}
        print(json.dumps(out))
    elif searches:
        print(
            f"study {study_id}: queued {len(ids)} lr search{'es' if len(ids) != 1 else ''} "
            f"(ids {ids[0]}-{ids[-1]}); each queues its runs at the "
            f"chosen lr ({spec['planned_runs']} in all). Watch it: moduletune study show {study_id}"
        )
    else:
        watch = f"Watch it: moduletune study show {study_id}"
        print(f"study {study_id}: queued {len(ids)} runs (ids {ids[0]}-{ids[-1]}). {watch}")
    return 0


def cmd_cancel(args) -> int:
    status = Registry().request_cancel(args.id)
    print(json.dumps({"id": args.id, "status": status}) if args.json else f"run {args.id}: {status}")
    return 0


def cmd_retry(args) -> int:
    new_id = retry(Registry(), args.id, submitter=args.submitter)
    print(json.dumps({"id": new_id, "status": "queued", "retry_of": args.id}) if args.json else new_id)
    return 0
