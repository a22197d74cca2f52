"""The CLI commands that go through the queue and the registry: `submit`, `sweep`, `runs`, `show`, `tag`,
`cancel`, `retry`, and the processes that serve them: `worker` and `serve`."""

from __future__ import annotations

import argparse
import json
import sys

from moduletune.app import server
from moduletune.app.experiment.form import parse_seeds
from moduletune.app.experiment.plan import search_configs, sweep_points
from moduletune.app.files.data_export import FORMATS, events_file, runs_file
from moduletune.app.public import limits as public
from moduletune.cli import args as cli_args
from moduletune.tasks.entities import Run, iso_time
from moduletune.tasks.registry import Registry
from moduletune.tasks.studies import default_name, spec_of
from moduletune.tasks.submission import retry, submit, submit_study
from moduletune.tasks.worker import run_worker
from moduletune.tuning import modules
from moduletune.tuning.config import DEFAULT_MODEL
from moduletune.tuning.flags import config_from_args
from moduletune.tuning.models import load_config

SWEEP_LIMIT = 100  # sweeps larger than this need --yes


def add_queue_flags(p: argparse.ArgumentParser) -> None:
    """Flags of queued runs beyond the run flags (shared by submit and sweep)."""
    p.add_argument("--submitter", default=None, help="who submitted it (default: the OS user)")
    add_tag_flags(p, "tag each run with TAG (repeat for more): letters, digits, - _ . : (40 at most)")
    p.add_argument("--note", default=None, help="a note on each run (2,000 characters at most)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_tag_flags(p: argparse.ArgumentParser, help: str) -> None:
    """--tag T, repeatable (submit, sweep, and runs' filter)."""
    p.add_argument("--tag", action="append", dest="tags", default=[], metavar="TAG", help=help)


def add_tag_command(sub) -> None:
    """`moduletune tag RUN_ID TAG... [--remove] [--note TEXT]`."""
    p = sub.add_parser("tag", help="add tags to a run (or --remove them), and set its note")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("tags", nargs="*", metavar="TAG", help="letters, digits, - _ . : (40 at most; 20 per run)")
    p.add_argument("--remove", action="store_true", help="take these tags off the run instead")
    p.add_argument("--note", default=None, help='set the run\'s note (2,000 characters at most; "" clears it)')
    p.add_argument("--json", action="store_true", help="print the run's tags and note as JSON")
    p.set_defaults(func=cmd_tag)


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


def _metric(run: Run) -> str:
    """'accuracy=0.6200', flagged when the run did not learn; '-' before a result."""
    result = run.result
    if result.primary_metric is None:
        return "-"
    flag = " (at chance)" if result.learned is False else ""
    return f"{result.primary_metric_name}={result.primary_metric:.4f}{flag}"


def _text(value) -> str:
    return "-" if value is None else str(value)


# The `moduletune runs` table: each column's heading, width and cell.
RUNS_TABLE = [
    ("id", 5, lambda r: str(r.id)),
    ("status", 11, lambda r: r.status),
    ("task", 5, lambda r: r.task),
    ("kind", 9, lambda r: r.kind),
    ("family", 9, lambda r: r.family),
    ("layers", 7, lambda r: r.layers),
    ("seed", 4, lambda r: str(r.seed)),
    ("lr", 8, lambda r: "-" if r.lr is None else f"{r.lr:g}"),
    ("progress", 12, lambda r: f"{r.progress.step}/{r.progress.total_steps}" if r.progress.total_steps else "-"),
    ("metric", 22, _metric),
    ("worker", 20, lambda r: _text(r.placement.worker)),
    ("queued_at", 20, lambda r: (iso_time(r.times.queued_at) or "-").replace("T", " ")[:19]),
    ("tags", 0, lambda r: ",".join(r.tags) or "-"),
]


def cmd_runs(args) -> int:
    if args.format or args.output:  # the runs as a file instead of a table
        return export_runs(args)
    rows = Registry().list_runs(
        status=args.status, task=args.task, sweep_id=args.sweep, limit=args.limit, tag=args.tags or None
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
        return 0
    print("  ".join(f"{name.upper():<{width}}" for name, width, _ in RUNS_TABLE).rstrip())
    for run in rows:
        print("  ".join(f"{cell(run):<{width}}" for _, width, cell in RUNS_TABLE).rstrip())
    return 0


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--format and --output: a command's table written as a file (app.data_export)."""

    p.add_argument("--format", default=None, choices=FORMATS, help="write a file (default: from --output's suffix)")
    p.add_argument("--output", default=None, metavar="FILE", help="the file to write (csv, parquet or json)")


def export_runs(args) -> int:
    """`moduletune runs --format csv|parquet|json --output FILE`: the registry's runs_frame, filtered alike."""

    if not args.output:
        raise ValueError("--format needs --output FILE, the file to write")
    filters = dict(status=args.status, task=args.task, sweep_id=args.sweep, limit=args.limit)
    if getattr(args, "tags", None):
        filters["tag"] = args.tags
    path = runs_file(Registry(), args.format, output=args.output, **filters)
    print(f"wrote {path}")
    return 0


def add_events_command(sub) -> None:
    """`moduletune events RUN_ID [RUN_ID ...] --output FILE [--format ...] [--name NAME ...]`."""
    p = sub.add_parser("events", help="runs' curves (every step's loss and lr, every evaluation) as a file")
    p.add_argument("ids", nargs="+", type=cli_args.run_id, metavar="RUN_ID")
    add_data_flags(p)
    p.add_argument("--name", action="extend", nargs="+", default=None, help="only these series (loss lr accuracy ...)")
    p.set_defaults(func=cmd_events)


def cmd_events(args) -> int:
    if not args.output:
        raise ValueError("events needs --output FILE, the file to write (csv, parquet or json)")
    path = events_file(Registry(), args.ids, args.format, names=args.name, output=args.output)
    print(f"wrote {path}")
    return 0


def cmd_show(args) -> int:
    run = Registry().get(args.id)
    record = run.to_dict()
    if args.json:
        print(json.dumps(record))
        return 0
    for key, value in record.items():  # every column of the JSON, as `key value` lines
        if key in ("config", "result") or value is None or value == []:
            continue
        print(f"{key:<20}{', '.join(value) if key == 'tags' else value}")
    print(f"{'config':<20}{json.dumps(run.config_data, sort_keys=True)}")
    result = run.result
    if result.details:
        print(f"{'metrics':<20}{json.dumps(result.detail('metrics'))}")
        if result.detail("verdict"):  # an lr search: what it found and how far to trust it
            print(f"{'verdict':<20}{result.detail('verdict')}: {result.detail('verdict_note', '')}")
    return 0


def cmd_tag(args) -> int:
    if not args.tags and args.note is None:
        raise ValueError("name a tag or more, or --note TEXT: moduletune tag RUN_ID TAG... [--remove] [--note TEXT]")
    edit = {"remove": args.tags} if args.remove else {"add": args.tags}
    run = Registry().annotate(args.id, **edit, note=args.note)
    if args.json:
        print(json.dumps(run))
    else:
        print(f"run {run['id']}: tags {', '.join(run['tags']) or '(none)'}; note {run['notes'] or '(none)'}")
    return 0


def cmd_cancel(args) -> int:
    status = Registry().request_cancel(args.id)
    print(json.dumps({"id": args.id, "status": status}) if args.json else f"run {args.id}: {status}")
    return 0


def cmd_retry(args) -> int:
    new_id = retry(Registry(), args.id, submitter=args.submitter)
    print(json.dumps({"id": new_id, "status": "queued", "retry_of": args.id}) if args.json else new_id)
    return 0


def cmd_worker(args) -> int:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
    return run_worker(
        device=args.device,
        workers=args.workers,
        worker_type=args.worker_type,
        heartbeat_timeout=args.heartbeat_timeout,
        report_to=args.report_to,
    )


def cmd_serve(args) -> int:
    limits = public.PublicLimits.from_env() if args.public or public.enabled() else None
    worker = not args.no_worker
    return server.serve(
        host=args.host, port=args.port, worker=worker, share=args.share, public=limits, exit_when_stopped=True
    )
