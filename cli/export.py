"""`moduletune export RUN_ID|ARTIFACT_DIR --format peft|transformers --output DIR [--push-to-hub REPO_ID [--private]]`,
a registry run's or an artifact folder's (tasks.artifacts does it for a run without a command line)."""

from __future__ import annotations

import json
from pathlib import Path

from moduletune.tasks.artifacts import run_artifact
from moduletune.tasks.registry import Registry
from moduletune.tuning.export import FORMATS, ExportError, check_output, check_repo_id, export_artifact, push_to_hub


def add_parser(sub) -> None:
    """Register the export command on the CLI's subparsers."""
    p = sub.add_parser(
        "export",
        help="a trained run as a peft adapter or a merged transformers model, with a model card; optionally pushed",
    )
    p.add_argument(
        "run", metavar="RUN_ID|ARTIFACT_DIR", help="a succeeded run's id, or an artifact folder (run --output)"
    )
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="peft (an LNTuning adapter: the trained modules and the head; for whole-module families) or "
        "transformers (the merged model; every run)",
    )
    p.add_argument("--output", required=True, help="the folder to write (new, or empty)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="then upload the folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo private (with --push-to-hub)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=cmd_export)


def artifact_of(source: str) -> Path:
    """RUN_ID|ARTIFACT_DIR -> the artifact folder: digits name a run, unless a folder of that name is there."""
    path = Path(source).expanduser()
    if source.strip().isdigit() and not path.is_dir():
        return run_artifact(Registry(), int(source))
    return path


def cmd_export(args) -> int:
    if args.private and not args.push_to_hub:
        raise ExportError("--private applies to the Hub repo --push-to-hub creates; give --push-to-hub REPO_ID")
    repo_id = check_repo_id(args.push_to_hub) if args.push_to_hub else None  # before anything heavy
    check_output(args.output)
    out = export_artifact(artifact_of(args.run), args.format, args.output, repo_id=repo_id)
    url = push_to_hub(out, repo_id, private=args.private) if repo_id else None
    if args.json:
        print(json.dumps({"output": str(out), "format": args.format, "url": url}))
    else:
        print(f"exported ({args.format}) to {out}" + (f"; pushed to {url}" if url else ""))
    return 0
