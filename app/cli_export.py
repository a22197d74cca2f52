"""`moduletune export RUN_ID|ARTIFACT_DIR --format peft|transformers --output DIR [--push-to-hub REPO_ID [--private]]`,
and export_run, the same for a registry's run without a command line (for the Runs tab)."""

from __future__ import annotations

import json
from pathlib import Path

from moduletune.tuning.export import FORMATS, ExportError


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


def run_artifact(registry, run_id: int) -> Path:
    """A registry run's artifact folder; refused, with the run's status, unless it succeeded and left one."""
    run = registry.get(int(run_id))
    if run["status"] != "succeeded" or not run.get("artifact_dir"):
        raise ExportError(f"run {run_id} is {run['status']}; only a succeeded run has an artifact to export")
    return Path(run["artifact_dir"])


def export_run(registry, run_id: int, fmt: str, out_dir, repo_id: str | None = None) -> Path:
    """Export a registry run (fmt: peft or transformers) into out_dir; the folder written. Gradio-free."""
    from moduletune.tuning.export import export_artifact

    return export_artifact(run_artifact(registry, run_id), fmt, out_dir, repo_id=repo_id)


def artifact_of(source: str) -> Path:
    """RUN_ID|ARTIFACT_DIR -> the artifact folder: digits name a run, unless a folder of that name is there."""
    path = Path(source).expanduser()
    if source.strip().isdigit() and not path.is_dir():
        from moduletune.tasks.registry import Registry

        return run_artifact(Registry(), int(source))
    return path


def cmd_export(args) -> int:
    from moduletune.tuning.export import check_output, check_repo_id, export_artifact, push_to_hub

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
