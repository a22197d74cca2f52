"""`moduletune runs | events | show | tag`: what the registry holds, read as a table, a file or one run, and a
run's tags and note."""

from __future__ import annotations

import argparse
import json

from moduletune.app.files.data_export import FORMATS, events_file, runs_file
from moduletune.cli import args as cli_args
from moduletune.tasks.entities import Run, iso_time
from moduletune.tasks.registry import Registry


def add_parser(sub) -> None:
    """Register runs, events, show and tag."""
    p = sub.add_parser("runs", help="list runs in the registry")
    p.add_argument("--status", default=None, help="queued running succeeded failed cancelled interrupted")
    p.add_argument("--task", default=None)
    p.add_argument("--sweep", default=None, help="only the runs of this sweep id")
    p.add_argument("--limit", type=cli_args.limit, default=None)
    cli_args.add_tag_flags(p, "only the runs tagged TAG (repeat: those with every one)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_data_flags(p)
    p.set_defaults(func=cmd_runs)
    add_events_command(sub)

    p = sub.add_parser("show", help="everything about one run")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    add_tag_command(sub)


def add_tag_command(sub) -> None:
    """`moduletune tag RUN_ID TAG... [--remove] [--note TEXT]`."""
    p = sub.add_parser("tag", help="add tags to a run (or --remove them), and set its note")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("tags", nargs="*", metavar="TAG", help="letters, digits, - _ . : (40 at most; 20 per run)")
    p.add_argument("--remove", action="store_true", help="take these tags off the run instead")
    p.add_argument("--note", default=None, help='set the run\'s note (2,000 characters at most; "" clears it)')
    p.add_argument("--json", action="store_true", help="print the run's tags and note as JSON")
    p.set_defaults(func=cmd_tag)


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
    """--format and --output: a command's table written as a file (app.files.data_export)."""

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
