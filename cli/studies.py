"""`moduletune study list | show | cancel | pause | resume | retry | raise | lower | report`: a study (a sweep or the
paper preset) watched and steered as one thing, over tasks.studies and tasks.submission."""

from __future__ import annotations

import json

from moduletune.cli import args as cli_args
from moduletune.tasks import submission
from moduletune.tasks.registry import Registry

# study_views is imported where a command runs: it brings pandas, and `moduletune --help` or a queue command
# must not pay for it (tests/tasks/test_registry.py checks the CLI's imports).

ACTIONS = ("cancel", "pause", "resume", "retry", "raise", "lower")


def add_parser(sub) -> None:
    """The `study` command and its sub-commands."""
    p = sub.add_parser("study", help="watch and steer a study (a sweep or the paper preset) as one thing")
    group = p.add_subparsers(dest="study_command", required=True)
    q = group.add_parser("list", help="every study, newest first, with its progress")
    q.add_argument("--limit", type=cli_args.limit, default=50)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = group.add_parser("show", help="one study: what was asked, progress, ETA")
    q.add_argument("id", type=cli_args.study_id)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    helps = {
        "cancel": "cancel every queued run of the study; running ones stop at their next step",
        "pause": "keep the study's queued runs queued but let no worker take them",
        "resume": "give a paused study's queued runs back to the workers",
        "retry": "queue every failed or interrupted run of the study again",
        "raise": "put the study's queued runs before single runs",
        "lower": "put the study's queued runs back behind single runs",
    }
    for action in ACTIONS:
        q = group.add_parser(action, help=helps[action])
        q.add_argument("id", type=cli_args.study_id)
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_action, action=action)
    q = group.add_parser("report", help="the study's findings (pending cells say so) as md, tex, csv or html")
    q.add_argument("id", type=cli_args.study_id)
    q.add_argument("--format", required=True, choices=["md", "tex", "csv", "html"])
    q.add_argument("--output", required=True, help="the file to write")
    q.set_defaults(func=cmd_report)


def cmd_list(args) -> int:
    from moduletune.app.study.views import failures, progress_bar

    found = Registry().studies(limit=args.limit)
    if args.json:
        print(json.dumps([s.to_dict() for s in found]))
        return 0
    print(f"{'ID':<5}  {'STATUS':<10}  {'PROGRESS':<22}  {'FAILURES':<24}  NAME")
    for s in found:
        bar = progress_bar(s.progress.done, s.progress.total)
        print(f"{s.id:<5}  {s.status:<10}  {bar:<22}  {failures(s) or '-':<24}  {s.name}")
    return 0


def cmd_show(args) -> int:
    from moduletune.app.study.views import progress_bar, study_record

    record = study_record(Registry(), args.id)
    if args.json:
        print(json.dumps(record))
        return 0
    p = record["progress"]
    print(f"study {record['id']}: {record['name']}")
    print(f"status     {record['status']} (asked: {record['state']}; priority {record['priority']})")
    searches = f"lr searches {p['searches_done']}/{p['searches']}"
    print(f"progress   {progress_bar(p['done'], p['total'])} runs done; {searches}")
    print(
        f"runs       {p['queued']} queued, {p['running']} running, {p['failed']} failed, {p['cancelled']} cancelled, "
        f"{p['interrupted']} interrupted"
    )
    print(f"ETA        {record['eta']}")
    print(f"asked      {json.dumps(record['spec'], sort_keys=True)}")
    return 0


def cmd_action(args) -> int:
    registry = Registry()
    if args.action == "cancel":
        done = registry.cancel_study(args.id)
        text = f"study {args.id}: {done['cancelled']} queued runs cancelled, {done['stopping']} stopping"
    elif args.action == "retry":
        ids = submission.retry_study(registry, args.id)
        done, text = {"id": args.id, "retried": ids}, f"study {args.id}: {len(ids)} runs queued again ({ids})"
    else:
        act = {
            "pause": lambda: submission.pause_study(registry, args.id),
            "resume": lambda: submission.resume_study(registry, args.id),
            "raise": lambda: submission.raise_study(registry, args.id, True),
            "lower": lambda: submission.raise_study(registry, args.id, False),
        }[args.action]
        record = act()
        done, text = {"id": args.id, "status": record["status"]}, f"study {args.id}: {record['status']}"
        if args.action in ("raise", "lower"):
            text += f" (priority {record['priority']})"
    print(json.dumps(done) if args.json else text)
    return 0


def cmd_report(args) -> int:
    from moduletune.app.study.report import report_from_registry, write_report

    registry = Registry()
    registry.study(args.id)  # an unknown id is named before anything is computed
    path = write_report(report_from_registry(registry, study_id=args.id, layers=None), args.format, args.output)
    print(f"wrote {path}")
    return 0
