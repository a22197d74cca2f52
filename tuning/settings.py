"""Where moduletune keeps its files: MODULETUNE_HOME (default ~/.moduletune)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data folder; a Space's persistent /data wins when it exists and HOME is not set."""
    if os.environ.get("MODULETUNE_HOME"):
        return Path(os.environ["MODULETUNE_HOME"]).expanduser()
    if Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/moduletune")
    return Path.home() / ".moduletune"
