"""`moduletune runs | events | show | tag`: what the registry holds, read as a table, a file or one run, and a
run's tags and note."""

from __future__ import annotations

import argparse
import json

from moduletune.app.files.data_export import FORMATS, events_file, runs_file
from moduletune.cli import args as cli_args
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
    ("tags", 0),
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
    if key == "tags":
        return ",".join(run["tags"]) or "-"
    value = run[key]
    return "-" if value is None else str(value)


def cmd_runs(args) -> int:
    if args.format or args.output:  # the runs as a file instead of a table
        return export_runs(args)
    rows = Registry().list_runs(
        status=args.status, task=args.task, sweep_id=args.sweep, limit=args.limit, tag=args.tags or None
    )
    if args.json:
        print(json.dumps(rows))
        return 0
    print("  ".join(f"{name.upper():<{width}}" for name, width in RUNS_TABLE).rstrip())
    for run in rows:
        print("  ".join(f"{_table_cell(run, name):<{width}}" for name, width in RUNS_TABLE).rstrip())
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
    if args.json:
        print(json.dumps(run))
        return 0
    for key, value in run.items():
        if key in ("config", "result") or value is None or value == []:
            continue
        print(f"{key:<20}{', '.join(value) if key == 'tags' else value}")
    print(f"{'config':<20}{json.dumps(run['config'], sort_keys=True)}")
    if run["result"]:
        print(f"{'metrics':<20}{json.dumps(run['result'].get('metrics'))}")
        if run["result"].get("verdict"):  # an lr search: what it found and how far to trust it
            print(f"{'verdict':<20}{run['result']['verdict']}: {run['result'].get('verdict_note', '')}")
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
