"""`moduletune serve | worker`: the processes that serve the queue, the web app (with an embedded worker) and a
worker on its own."""

from __future__ import annotations

import argparse
import os
import sys

from moduletune.app import server
from moduletune.app.public import limits as public
from moduletune.tasks.worker import run_worker


def add_parser(sub) -> None:
    """Register serve and worker."""
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


def port_flag(text: str) -> int:
    """--port's value, with the server's message when it is not a port."""
    try:
        return server.port_number(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
