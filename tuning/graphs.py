"""CUDA graphs of a training step's forward and backward, one per batch shape, so a GPU step costs a
few launches instead of hundreds.

At batch 32 and GLUE's short sentences a GPU finishes each kernel faster than Python can launch the
next one: an eager bert-base step is almost all launch overhead. torch.cuda.make_graphed_callables
records the forward and backward once per (batch size, padded length) and replays them; the optimizer
step, gradient clipping and the schedule stay outside, as in eager mode, so the arithmetic is the same.

Which shapes: a capture does about three eager steps' worth of host work (a warm-up pass, then the
forward and the backward recorded), so it pays only for a shape the run will use several times. The
training loop knows each epoch's batches up front and hands their widths to expect(): a width with at
least MIN_USES coming uses is captured at its first step, a rarer one (the few longest batches) runs
eagerly, as do batches of another size than the configured one (an epoch's last).

Semantics: dropout still draws fresh noise on every replay. A failed capture leaves CUDA's
random-number and allocator state mid-capture, so there is no eager fallback: it stops the run with an
error that names the way out, and graphs are used only for architectures whose capture has been seen
to work (modules.Architecture).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Iterable

import torch

MIN_USES = 4  # uses of a shape in the rest of a run that repay its capture (about three eager steps)


def capture_plan(widths: Iterable[int], epochs: int = 1, min_uses: int = MIN_USES) -> set[int]:
    """The widths worth a CUDA graph: those of at least min_uses coming full-size batches.

    widths: the padded width of each coming full-size batch of this epoch; epochs: how many epochs
    (this one included) will use about the same widths.
    """
    return {w for w, n in Counter(widths).items() if n * max(epochs, 1) >= min_uses}


class GraphCaptureError(RuntimeError):
    """A step could not be captured; the process's CUDA state is no longer trustworthy."""


class LossOf(torch.nn.Module):
    """The model's loss from positional tensors, the form make_graphed_callables takes."""

    def __init__(
        self,
        loss_fn: Callable[[dict, torch.Tensor | None], torch.Tensor],
        keys: tuple[str, ...],
        with_hidden: bool,
        model: torch.nn.Module,
    ):
        super().__init__()
        self.model = model  # registered, so the model's trainable parameters are the graph's parameters
        self.loss_fn = loss_fn
        self.keys = keys
        self.with_hidden = with_hidden

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.keys, tensors))
        hidden = tensors[len(self.keys)] if self.with_hidden else None
        return self.loss_fn(batch, hidden)


class GraphedSteps:
    """Per-shape graphed loss functions for one model, sharing one memory pool."""

    def __init__(self, model: torch.nn.Module, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.capture_widths: set[int] = set()  # set by expect() at each epoch's start
        self.pool = torch.cuda.graph_pool_handle()
        # Replays run their backward on the default stream into gradient accumulators made during
        # capture on the capture stream: torch warns of the stream mismatch, which is expected here.
        quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
        if quiet is not None:
            quiet(False)
        self.graphed: dict[tuple, Callable] = {}
        self.replays = 0
        self.eager_steps = 0
        self.capture_seconds = 0.0

    def expect(self, widths: Iterable[int], epochs: int = 1) -> None:
        """Plan the captures from the widths of the coming full-size batches (see capture_plan)."""
        self.capture_widths = capture_plan(widths, epochs)

    def loss(
        self,
        batch: dict,
        hidden: torch.Tensor | None,
        loss_fn: Callable[[dict, torch.Tensor | None], torch.Tensor],
        graph_loss_fn: Callable[[dict, torch.Tensor | None], torch.Tensor],
    ) -> torch.Tensor:
        """The step's loss (with autograd), replayed from a graph where one exists or is worth making.

        loss_fn runs the step eagerly; graph_loss_fn is the same computation in a capturable form
        (autocast without its weight cache, which graphs do not allow).
        """
        keys = tuple(sorted(batch))
        tensors = [batch[k] for k in keys] + ([hidden] if hidden is not None else [])
        shape = (keys, tuple(tuple(t.shape) for t in tensors))
        graphed = self.graphed.get(shape)
        if graphed is None:
            rows, width = batch["input_ids"].shape
            if rows != self.batch_size or width not in self.capture_widths:
                self.eager_steps += 1
                return loss_fn(batch, hidden)
            graphed = self._capture(shape, keys, tensors, hidden is not None, graph_loss_fn)
        self.replays += 1
        return graphed(*tensors)

    def _capture(self, shape, keys, tensors, with_hidden, graph_loss_fn):
        t0 = time.perf_counter()
        module = LossOf(graph_loss_fn, keys, with_hidden, self.model).train(self.model.training)
        sample = tuple(t.detach().clone() for t in tensors)
        try:
            graphed = torch.cuda.make_graphed_callables(
                module, sample, num_warmup_iters=1, allow_unused_input=True, pool=self.pool
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GraphCaptureError(
                f"CUDA graph capture failed for {self.model.config.model_type} ({first}); "
                "run it again with CUDA graphs off (cuda_graphs=False, CLI --no-cuda-graphs)"
            ) from exc
        finally:
            self.capture_seconds += time.perf_counter() - t0
        self.graphed[shape] = graphed
        return graphed

    def report(self) -> dict:
        return {
            "shapes": len(self.graphed),
            "replays": self.replays,
            "eager_steps": self.eager_steps,
            "capture_seconds": round(self.capture_seconds, 3),
        }
