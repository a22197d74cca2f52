"""What a run trains (whole tensors by name, random:<family> entry masks) and its exact parameter counts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Selection:
    """What a run trains: whole tensors by name, plus per-tensor entry masks for random:<family>."""

    module: list[str]
    head: list[str]
    masks: dict[str, "object"] = field(default_factory=dict)  # name -> bool tensor (random only)
    module_params: int = 0
    head_params: int = 0
    encoder_params: int = 0
    total_params: int = 0

    @property
    def trainable_params(self) -> int:
        return self.module_params + self.head_params

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / self.total_params

    @property
    def module_pct(self) -> float:
        """The module's share of the pre-trained encoder, as the paper reports it."""
        return 100.0 * self.module_params / self.encoder_params

    @property
    def names(self) -> list[str]:
        return self.module + self.head

    def counts(self) -> dict:
        return {
            "module_params": self.module_params,
            "head_params": self.head_params,
            "trainable_params": self.trainable_params,
            "encoder_params": self.encoder_params,
            "total_params": self.total_params,
            "module_pct": self.module_pct,
            "trainable_pct": self.trainable_pct,
        }


def random_masks(layer_pattern: str, encoder: dict, k: int, seed: int) -> dict:
    """k entries drawn uniformly without replacement from all transformer-layer weights (names matching
    layer_pattern)."""
    import torch

    pool = [n for n in encoder if re.match(layer_pattern, n)]
    sizes = np.array([encoder[n].numel() for n in pool], dtype=np.int64)
    rng = np.random.default_rng(seed)
    # Splitting k across tensors hypergeometrically is an exact uniform draw without
    # materialising a permutation of every encoder weight.
    per_tensor = rng.multivariate_hypergeometric(sizes, k)
    masks = {}
    for name, size, take in zip(pool, sizes, per_tensor):
        if take == 0:
            continue
        flat = torch.zeros(int(size), dtype=torch.bool)
        flat[torch.from_numpy(rng.choice(int(size), size=int(take), replace=False))] = True
        masks[name] = flat.view(encoder[name].shape)
    return masks
