"""A run's checkpoint: its trainable tensors, optimizer, schedule, RNG and loop position, written atomically.

A checkpoint carries what it belongs to: a fingerprint of the run's settings (and, from a worker, the
registry and run it was made for). One that belongs to something else is moved aside, never resumed, so a
new run whose id or folder an old one used starts from step 0 instead of reporting another run's training.
An unreadable or unwritable checkpoint fails with a message naming the file or folder and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from moduletune.tuning.disk import DiskFullError, write_atomic
from moduletune.tuning.replicates import EXECUTION_ONLY
from moduletune.tuning.text import one_line

CHECKPOINT_FILE = "checkpoint.pt"
# Settings that change where or how a run goes, not what it trains: replicates' execution-only knobs (less the
# seed, which changes the training) plus the device and its precision, since a run resumed by another worker
# may land on another GPU or on the CPU and is still the same run.
NOT_FINGERPRINTED = tuple(k for k in EXECUTION_ONLY if k != "seed") + ("device", "precision")

log = logging.getLogger("moduletune.checkpoints")


class CheckpointError(OSError):
    """A checkpoint that cannot be read or written; the message names the file or folder and what to do."""


def fingerprint(config: dict, owner: dict | None = None) -> str:
    """What a checkpoint belongs to: the run's settings (less NOT_FINGERPRINTED) and its owner, as a digest."""
    settings = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    text = json.dumps({"settings": settings, "owner": owner or {}}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def move_aside(path: Path, why: str) -> Path:
    """Rename a file or folder out of the way (kept for a person to look at, never found again by a run)."""
    aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        path.rename(aside)
    except OSError as err:
        raise CheckpointError(
            f"cannot move {path} aside ({err.strerror or one_line(err)}): remove it or make its folder writable"
        ) from None
    return aside


def save(path: Path, model, selection, optimizer, scheduler, state: dict, owner: str) -> None:
    """Trainable tensors + optimizer + scheduler + loop position, stamped with its owner's fingerprint."""
    params = dict(model.named_parameters())
    blob = {
        "trainable": {n: params[n].detach().cpu() for n in selection.names},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "fingerprint": owner,
        **state,
    }
    try:
        # Through a Python file, not a path: an unwritable folder is then a plain OSError ("Permission denied"),
        # not torch's "[enforce fail at inline_container.cc:747] ..." text; a full disk names the file.
        write_atomic(path, lambda f: torch.save(blob, f), "the checkpoint")
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        reason = getattr(err, "strerror", None) or one_line(err)
        raise CheckpointError(
            f"cannot write the checkpoint in {path.parent}: {reason}; make that folder writable "
            "(and free some space), or set MODULETUNE_HOME to a folder that is"
        ) from None


def load(path: Path, model, optimizer, scheduler, owner: str) -> dict | None:
    """The saved loop position, with the tensors and optimizer restored; None (and the file moved aside) when
    the checkpoint belongs to another run. CheckpointError, the file moved aside, when it is unreadable."""
    try:
        blob = torch.load(path, weights_only=False, map_location="cpu")
        if not isinstance(blob, dict) or "trainable" not in blob:
            raise ValueError("not a moduletune checkpoint")
    except Exception as err:  # truncated, corrupt, or not ours: torch raises many kinds
        aside = move_aside(path, "corrupt")
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt: {one_line(err, with_type=True)}): "
            f"moved aside to {aside}; retry the run to start from step 0"
        ) from None
    if blob.get("fingerprint") != owner:
        aside = move_aside(path, "stale")
        log.warning(
            "refused the checkpoint %s: it was made for another run or registry (fingerprint %s, this run "
            "%s); moved aside to %s, starting from step 0",
            path,
            blob.get("fingerprint"),
            owner,
            aside.name,
        )
        return None
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in blob.pop("trainable").items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(blob.pop("optimizer"))
    scheduler.load_state_dict(blob.pop("scheduler"))
    torch.set_rng_state(blob.pop("torch_rng"))
    cuda_rng = blob.pop("cuda_rng")
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    blob.pop("fingerprint", None)
    return blob
