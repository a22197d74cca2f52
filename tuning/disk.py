"""The files a run writes, each written atomically and, when the disk is full, named in a message that says so."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Callable

FULL = "no space left on the device"


class DiskFullError(OSError):
    """A write that found the disk full; the message names the file and what to do."""

    def __str__(self) -> str:  # the message alone: OSError would print "[Errno 28] None" once errno is set
        return str(self.args[0]) if self.args else ""


def full(err: BaseException) -> bool:
    """Whether an error is the disk being full (ENOSPC, or EDQUOT: a quota is a full disk to its user)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Path, what: str) -> DiskFullError:
    """The one message for a full disk: what was written, where, and what to do."""
    err = DiskFullError(
        f"cannot write {what} {path}: {FULL} (free some space there, or set MODULETUNE_HOME to a disk with room)"
    )
    err.errno, err.filename = errno.ENOSPC, str(path)
    return err


def write_atomic(path: Path, write: Callable, what: str) -> Path:
    """path written through a temporary file beside it: write(f) fills the open binary file, which is flushed and
    synced before it replaces path, so a reader sees the old file or the new one. A full disk is a DiskFullError
    naming path; any other error passes through unchanged (callers word their own)."""
    path = Path(path)
    # Two writers (processes, or a thread worker's threads) never share a temporary file.
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # a Python file: torch and safetensors then raise a plain OSError when full
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk can show only here (delayed allocation), before the rename
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if full(err):
            raise disk_full(path, what) from None
        raise
    return path


def write_text(path: Path, text: str, what: str) -> Path:
    """A text file (UTF-8) written as write_atomic writes."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")), what)
