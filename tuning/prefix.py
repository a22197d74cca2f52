"""Frozen-prefix cache: run the layers below the lowest trainable one once, then reuse their output.

Semantics: the cached output is computed in eval mode (no dropout). For evaluation that is exactly
what the model computes anyway. For training it is exact only when the frozen prefix has no active
dropout; otherwise "on" trades the frozen layers' dropout noise for speed (measured in
bench/sweep_prefix_cache.py), and "auto" leaves training uncached.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from moduletune.tuning import batches, modules


class _PrefixOutput(nn.Module):
    """Stands in for the embeddings: returns the cached hidden states of the current batch."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        return self.hidden


@dataclass
class PrefixStates:
    """Unpadded hidden states of every row after the frozen prefix, packed into one tensor."""

    flat: torch.Tensor  # [sum of lengths, hidden]
    offsets: np.ndarray  # row i is flat[offsets[i]:offsets[i + 1]]

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def batch(self, idx, width: int, device) -> torch.Tensor:
        """Zero-padded [len(idx), width, hidden] block for these rows (padding is masked anyway).

        One gather and one scatter on the states' device, whatever the batch size.
        """
        idx = np.asarray(idx)
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = torch.from_numpy(np.repeat(starts, lengths) + pos)
        dst = torch.from_numpy(np.repeat(np.arange(len(idx)) * width, lengths) + pos)
        if self.flat.is_cuda:
            src, dst = src.pin_memory(), dst.pin_memory()
        src, dst = src.to(self.flat.device, non_blocking=True), dst.to(self.flat.device, non_blocking=True)
        out = self.flat.new_zeros((len(idx) * width, self.flat.shape[1]))
        out[dst] = self.flat[src]
        return out.view(len(idx), width, -1).to(device, non_blocking=True)


def _split_path(base, path: str):
    *parents, attr = path.split(".")
    owner = base
    for p in parents:
        owner = getattr(owner, p)
    return owner, attr


def _views(model) -> dict:
    """Per-model reusable stand-ins, so a compiled model sees the same objects on every step."""
    if "_prefix_views" not in model.__dict__:
        model.__dict__["_prefix_views"] = {"stub": _PrefixOutput(None)}
    return model.__dict__["_prefix_views"]


@contextmanager
def layers_only(model, keep: slice, cached: torch.Tensor | None = None):
    """Temporarily run only layers[keep]; with `cached`, the embeddings return it instead of computing."""
    arch = modules.architecture_for(model.config.model_type)
    base = model.base_model
    owner, attr = _split_path(base, arch.layers_path)
    original_layers = getattr(owner, attr)
    views = _views(model)
    span = (keep.start, keep.stop)
    if span not in views:
        views[span] = nn.ModuleList(list(original_layers)[keep])
    swapped = {}
    setattr(owner, attr, views[span])
    try:
        if cached is not None:
            views["stub"].hidden = cached
            for i, name in enumerate(arch.embedding_modules):
                if hasattr(base, name):
                    swapped[name] = getattr(base, name)
                    setattr(base, name, views["stub"] if i == 0 else views.setdefault("identity", nn.Identity()))
        yield
    finally:
        setattr(owner, attr, original_layers)
        for name, module in swapped.items():
            setattr(base, name, module)
        views["stub"].hidden = None


def prefix_has_dropout(model, first_trainable: int) -> bool:
    """Whether the embeddings or layers below first_trainable apply dropout in training."""
    arch = modules.architecture_for(model.config.model_type)
    base = model.base_model
    owner, attr = _split_path(base, arch.layers_path)
    parts = [getattr(base, n) for n in arch.embedding_modules if hasattr(base, n)]
    parts += list(getattr(owner, attr))[:first_trainable]
    probs = [m.p for part in parts for m in part.modules() if isinstance(m, nn.Dropout)]
    config_probs = [
        getattr(model.config, k, 0.0) or 0.0
        for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")
    ]
    return any(p > 0 for p in probs + config_probs)


@torch.inference_mode()
def compute_states(
    model, enc: batches.Encoded, first_trainable: int, padding: batches.Padding, device, autocast, batch_size: int = 256
) -> PrefixStates:
    """Run embeddings + layers[:first_trainable] once over every row, in eval mode."""
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor | None] = [None] * len(enc)
    with layers_only(model, slice(0, first_trainable)):
        for idx in batches.sorted_batches(enc.lengths, batch_size):
            batch = batches.to_device(
                {k: v for k, v in batches.collate(enc, idx, padding).items() if k != "labels"}, device
            )
            with autocast():
                hidden = model.base_model(**batch).last_hidden_state
            lengths = batch["attention_mask"].sum(-1).tolist()
            for row, i in enumerate(idx):
                chunks[i] = hidden[row, : lengths[row]].float()
    model.train(was_training)
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([c.shape[0] for c in chunks])
    return PrefixStates(torch.cat(chunks).clone(), offsets)


class StateCache:
    """In-process LRU of prefix outputs, so runs in one worker that share a prefix pay for it once."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple, PrefixStates] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: tuple, compute) -> PrefixStates:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        states = compute()
        if states.nbytes <= self.budget:
            self.entries[key] = states
            while sum(s.nbytes for s in self.entries.values()) > self.budget:
                self.entries.popitem(last=False)
        return states


_CACHE: StateCache | None = None


def shared_cache() -> StateCache:
    """The process-wide cache (created on first use; MODULETUNE_PREFIX_CACHE_MB caps it, default 4096)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = StateCache(int(float(os.environ.get("MODULETUNE_PREFIX_CACHE_MB", "4096")) * 2**20))
    return _CACHE


def forward(model, batch: dict, hidden: torch.Tensor | None, first_trainable: int | None):
    """model(**batch); with `hidden` (cached prefix output for this batch), starting at layer first_trainable."""
    if hidden is None:
        return model(**batch)
    with layers_only(model, slice(first_trainable, None), hidden):
        return model(**batch)
