"""The registry's runs and event series as files (CSV, Parquet or JSON), for `moduletune runs|events --format ...
--output ...` and the Runs tab's downloads alike; no Gradio here.

The runs file is the registry's runs_frame (README, "Data export", lists its columns) with the replicate settings
as JSON text; the events file is its events_frame (run_id, step, epoch, split, name, value). A file is written
under a temporary name and renamed into place, so a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from moduletune.tuning.trackers import installed

FORMATS = ("csv", "parquet", "json")


class ExportError(ValueError):
    """An export that cannot be made: an unknown format, a missing Parquet engine, no runs named."""


def format_of(fmt: str | None, output=None) -> str:
    """The format asked for, else the output file's suffix (runs.parquet -> parquet); ExportError otherwise."""
    name = str(fmt or (Path(str(output)).suffix.lstrip(".") if output else "")).lower()
    if name not in FORMATS:
        where = "" if fmt or not output else f" (from the file name {Path(str(output)).name!r})"
        raise ExportError(f"export format must be one of {', '.join(FORMATS)}; got {name or 'none'!r}{where}")
    if name == "parquet" and not installed("pyarrow"):
        raise ExportError("parquet files need pyarrow: pip install pyarrow (the data extra), or use csv or json")
    return name


def runs_table(registry, **filters):
    """The registry's runs_frame (filters: its keyword arguments, status, task, sweep_id, limit ...) ready for a
    file: each run's replicate settings, a mapping, as JSON text."""
    frame = registry.runs_frame(**filters)
    frame["settings"] = [json.dumps(s, sort_keys=True, default=str) for s in frame["settings"]]
    return frame


def events_table(registry, run_ids, names=None):
    """The registry's events_frame of these runs (each must exist: RunNotFound names one that does not)."""
    ids = [run_ids] if isinstance(run_ids, (int, str)) else list(run_ids or ())
    if not ids:
        raise ExportError("name at least one run id to export its events")
    for run_id in dict.fromkeys(ids):
        registry.get(run_id)
    return registry.events_frame(ids, names=list(names) if names else None)


def write_table(frame, fmt: str, path) -> Path:
    """Write a frame as csv, parquet or json (a list of records, times as ISO-8601 UTC) to path, in one step."""
    fmt = format_of(fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        if fmt == "csv":
            csv_cells(frame).to_csv(temporary, index=False)
        elif fmt == "parquet":
            frame.to_parquet(temporary, index=False)
        else:
            frame.to_json(temporary, orient="records", date_format="iso", date_unit="s", indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def csv_cells(frame):
    """The frame with each list or mapping cell (a run's tags, say) as JSON text, which a CSV reader can parse."""
    nested = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, (list, tuple, dict))).any()]
    if not nested:
        return frame
    frame = frame.copy()
    for col in nested:
        frame[col] = [json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else v for v in frame[col]]
    return frame


def unique_path(kind: str, fmt: str, folder=None) -> Path:
    """A new file name no other export shares: moduletune-<kind>-XXXX.<fmt> in folder (default: the temp dir,
    which Gradio serves)."""
    handle, name = tempfile.mkstemp(prefix=f"moduletune-{kind}-", suffix=f".{fmt}", dir=folder)
    os.close(handle)
    return Path(name)


def runs_file(registry, fmt: str, output=None, folder=None, **filters) -> Path:
    """The runs (filters as runs_frame takes them: status, task, sweep_id, limit ...) written as fmt to output,
    else to a new file in folder; its path."""
    fmt = format_of(fmt, output)
    frame = runs_table(registry, **filters)
    return _written(frame, fmt, output, "runs", folder)


def events_file(registry, run_ids, fmt: str, names=None, output=None, folder=None) -> Path:
    """The runs' event series (only these names, when given) written as fmt to output, else to a new file in
    folder; its path."""
    fmt = format_of(fmt, output)
    frame = events_table(registry, run_ids, names)
    return _written(frame, fmt, output, "events", folder)


def _written(frame, fmt: str, output, kind: str, folder) -> Path:
    if output:
        return write_table(frame, fmt, output)
    path = unique_path(kind, fmt, folder)
    try:
        return write_table(frame, fmt, path)
    except BaseException:
        path.unlink(missing_ok=True)  # the empty file that reserved the name
        raise
