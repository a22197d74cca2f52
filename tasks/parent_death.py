"""A child process that dies with its parent: Linux's PR_SET_PDEATHSIG, for the server's worker and its children.

Without it, a killed server (SIGKILL, OOM) leaves an orphaned worker training, and a killed worker
leaves forked children holding GPUs.
"""

from __future__ import annotations

import sys

PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int):
    """A no-argument function that asks the kernel to send signum to the calling process when its parent dies
    (usable as subprocess's preexec_fn, or called in a forked child); None where the platform cannot.

    libc and prctl are looked up here, in the parent, so the child makes one call and nothing else."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # never stop a process from starting over this
        return None

    def ask() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)

    return ask
