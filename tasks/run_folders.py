"""A run's folder under MODULETUNE_HOME/runs/<id>: checkpoint/ while it trains, search/ for an lr search,
artifact/ when it succeeded; made sure to belong to this registry's run before anything in it is resumed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from moduletune.tuning.disk import DiskFullError, write_text
from moduletune.tuning.search_state import STATE_FILE
from moduletune.tuning.settings import home

log = logging.getLogger("moduletune.jobs")


def run_dir(run_id: int) -> Path:
    """A run's folder: checkpoint/ while it trains, artifact/ when it succeeded."""
    return home() / "runs" / str(int(run_id))


OWNER_FILE = "owner.json"


def own_run_dir(run_id: int, owner: dict, config) -> Path:
    """The run's folder, made sure to be this run's: a folder left by another registry's run of the same id
    (a reset or switched registry restarts ids at 1), or by a run with other settings, is moved aside first.

    The folder carries owner.json (registry id, run id, settings fingerprint); its checkpoint carries the
    same fingerprint (tuning.checkpoints), so a copied or stray checkpoint is refused too."""
    # Both, on purpose: owner.json covers everything the folder holds (checkpoint/, search/ and its candidates'
    # checkpoints) in one look before anything is loaded, while the stamp inside each checkpoint is what a
    # notebook user reusing a checkpoint_dir with other settings is refused by (the engine knows no registry).
    import json

    from moduletune.tuning.checkpoints import fingerprint, move_aside

    folder = run_dir(run_id)
    mine = {**owner, "fingerprint": fingerprint(config.to_dict(), owner)}
    if folder.exists():
        try:
            found = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            found = None
        if found != mine:
            aside = move_aside(folder, "stale")
            log.warning(
                "run %s: the folder %s belongs to another run (%s); moved aside to %s, starting from step 0",
                run_id,
                folder,
                found or "no owner recorded",
                aside.name,
            )
    try:
        # Atomic: a half-written owner would send the run back to step 0.
        write_text(folder / OWNER_FILE, json.dumps(mine), "the run folder's owner file")
    except DiskFullError:
        raise
    except OSError as err:
        raise OSError(
            f"cannot write the run folder {folder} ({err.strerror or err}): make it writable, or set "
            "MODULETUNE_HOME to a folder that is"
        ) from None
    return folder


def drop_resume_state(run_id: int) -> None:
    """A cancelled or failed run leaves no checkpoint or search state that anything could resume; what was moved
    aside (a corrupt or stale checkpoint, which the failure's message names) stays for a person to look at."""
    from moduletune.tuning.checkpoints import CHECKPOINT_FILE

    for name in ("checkpoint", "search"):
        folder = run_dir(run_id) / name
        if not any(moved_aside(p) for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for path in folder.rglob("*"):
            if path.name in (CHECKPOINT_FILE, STATE_FILE):  # the only files a run ever resumes from
                path.unlink(missing_ok=True)


def moved_aside(path: Path) -> bool:
    """Whether tuning.checkpoints.move_aside named this file (checkpoint.pt.corrupt-<time>-<pid>, ...)."""
    return ".corrupt-" in path.name or ".stale-" in path.name
