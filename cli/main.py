"""`moduletune serve | worker | run | submit | sweep | study | runs | events | show | tag | cancel | retry | export |
report | count | magnitudes`: the parser over the commands in cli_engine, cli_queue, cli_study and cli_export."""

from __future__ import annotations

import argparse
import os
import sys

from moduletune.app import server
from moduletune.cli import args as cli_args
from moduletune.cli import export as cli_export
from moduletune.cli import studies as cli_study
from moduletune.cli.queue import (
    SWEEP_LIMIT,
    add_data_flags,
    add_events_command,
    add_queue_flags,
    add_tag_command,
    add_tag_flags,
    cmd_cancel,
    cmd_retry,
    cmd_runs,
    cmd_serve,
    cmd_show,
    cmd_submit,
    cmd_sweep,
    cmd_worker,
    sweep_configs,
)
from moduletune.cli.train import cmd_count, cmd_magnitudes, cmd_report, cmd_run
from moduletune.tuning.flags import add_run_flags, config_from_args, run_flags

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
__all__ = ["build_parser", "main", "config_from_args", "run_flags", "add_run_flags", "sweep_configs", "cmd_serve"]


def port_flag(text: str) -> int:
    """--port's value, with the server's message when it is not a port."""
    try:
        return server.port_number(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (lora:<families>)")
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
    p.add_argument("--limit", type=cli_args.limit, default=None)
    add_tag_flags(p, "only the runs tagged TAG (repeat: those with every one)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_data_flags(p)
    p.set_defaults(func=cmd_runs)
    add_events_command(sub)

    p = sub.add_parser("show", help="everything about one run")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    add_tag_command(sub)

    p = sub.add_parser("cancel", help="cancel a queued run, or stop a running one at its next step")
    p.add_argument("id", type=cli_args.run_id)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", help="queue a failed, cancelled or interrupted run again as a new run")
    p.add_argument("id", type=cli_args.run_id)
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
    p.add_argument("--report-to", default=None, help="trackio, mlflow, tensorboard: for runs whose config names none")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="the web app (Gradio), with an embedded worker unless --no-worker")
    p.add_argument(
        "--host",
        default=os.environ.get(server.HOST_ENV) or server.DEFAULT_HOST,
        help="address to listen on (0.0.0.0 for every interface; default: GRADIO_SERVER_NAME or 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=port_flag,
        default=os.environ.get(server.PORT_ENV) or server.DEFAULT_PORT,
        help="port to listen on (default: GRADIO_SERVER_PORT or 7860)",
    )
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

    cli_export.add_parser(sub)
    cli_study.add_parser(sub)
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
