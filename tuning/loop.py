"""The training loop's checkpointed state (LoopState) and the checkpoint it is saved to and resumed from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from moduletune.tuning import checkpoints


@dataclass
class LoopState:
    """Where the loop stands and what it has measured: what a checkpoint holds beside tensors and RNG.

    The fields are the checkpoint's own keys (tuning/checkpoints.py spreads them into the file), so a
    checkpoint resumes whichever version of this loop wrote it.
    """

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one {"step", "epoch", "metrics"} per evaluation
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    examples_seen: int = 0
    resumed_from_step: int | None = None
    last_eval: dict | None = None  # the latest evaluation's {split: (predictions, labels)}, for the chance verdict

    @property
    def evaluated_now(self) -> bool:
        return bool(self.history) and self.history[-1]["step"] == self.step

    def as_dict(self) -> dict:
        # Shallow, unlike dataclasses.asdict: the history and predictions are saved as they are, not copied.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def step_event(self, total_steps: int, steps_per_epoch: int, loss: float, lr: float) -> dict:
        """The "step" event: where the run is, its latest loss read, its rate and the time it has left."""
        # train_seconds survives a resume with the step count, so their ratio stays the mean step time.
        remaining = (total_steps - self.step) * self.train_seconds / self.step
        return {
            "kind": "step",
            "step": self.step,
            "total_steps": total_steps,
            "epoch": self.step / steps_per_epoch,
            "loss": loss,
            "lr": lr,
            "examples_per_second": self.examples_seen / max(self.train_seconds, 1e-9),
            "eta_seconds": remaining,
        }


@dataclass
class Checkpointer:
    """A run's checkpoint file (none when path is None), stamped for the run, and what it saves and restores."""

    path: Path | None
    stamp: str  # checkpoints.fingerprint of the run's settings and owner
    model: object
    selection: object
    optimizer: object
    scheduler: object
    emit: Callable[[dict], object]
    steps_per_epoch: int

    def resume(self) -> LoopState:
        """The saved state, with tensors, optimizer, schedule and RNG restored; a fresh state when there is no
        checkpoint, or only another run's (checkpoints.load moves that aside)."""
        found = None
        if self.path is not None and self.path.is_file():
            found = checkpoints.load(self.path, self.model, self.optimizer, self.scheduler, self.stamp)
        if found is None:
            return LoopState()
        known = {f.name for f in dataclasses.fields(LoopState)}
        state = LoopState(**{k: v for k, v in found.items() if k in known})
        state.resumed_from_step = state.step
        return state

    def save(self, state: LoopState) -> None:
        if self.path is None:
            return
        # Announced first, so a recorder can flush every event up to this point before it is saved.
        self.emit({"kind": "checkpoint", "step": state.step, "epoch": state.step / self.steps_per_epoch})
        checkpoints.save(
            self.path, self.model, self.selection, self.optimizer, self.scheduler, state.as_dict(), self.stamp
        )
