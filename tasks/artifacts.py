"""A registry run's artifact folder, and its export (a peft adapter or a merged model) for the CLI and the Runs tab."""

from __future__ import annotations

from pathlib import Path

from moduletune.tuning.export import ExportError, export_artifact


def run_artifact(registry, run_id: int) -> Path:
    """A registry run's artifact folder; refused, with the run's status, unless it succeeded and left one."""
    run = registry.get(int(run_id))
    if run.status != "succeeded" or not run.artifact_dir:
        raise ExportError(f"run {run_id} is {run.status}; only a succeeded run has an artifact to export")
    return Path(run.artifact_dir)


def export_run(registry, run_id: int, fmt: str, out_dir, repo_id: str | None = None) -> Path:
    """Export a registry run (fmt: peft or transformers) into out_dir; the folder written. Gradio-free."""
    return export_artifact(run_artifact(registry, run_id), fmt, out_dir, repo_id=repo_id)
