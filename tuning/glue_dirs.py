"""A GLUE folder named for a run, checked where runs enter (run, submit, the web API) as loading would find it."""

from __future__ import annotations

from pathlib import Path

from moduletune.tuning.glue import GlueError, get_task, split_rows


def check_glue_dir(task, glue_dir) -> None:
    """A folder on this machine whose task files (training and evaluation) are there and read as GLUE files; None
    or "" (the default: MODULETUNE_GLUE_DIR, else the Hub) passes. Refused in one line before anything is queued."""
    if glue_dir in (None, ""):
        return
    task = get_task(task)
    text = glue_dir if isinstance(glue_dir, str) else str(glue_dir)
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if "\x00" in text:
        raise GlueError(f"the GLUE folder {shown} is not a path (it holds a NUL character)")
    root = Path(text).expanduser()
    if not (root / task.folder).is_dir():
        raise GlueError(f"the GLUE folder {shown} holds no {task.name} data here: looked for {root / task.folder}")
    # The first row of each file: cheap (files are streamed) and it checks the header as training would.
    next(split_rows(task, "train", root), None)
    errors = []
    for split in task.eval_splits:  # one evaluation file is enough, as loading requires
        try:
            next(split_rows(task, split, root), None)
            return
        except GlueError as err:
            errors.append(err)
    raise errors[0]
