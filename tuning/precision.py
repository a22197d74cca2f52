"""Frozen linear weights stored in autocast's compute dtype, so they are not cast again on every step.

Under bf16 autocast a linear layer runs on bf16 copies of its fp32 weight and bias. Autocast caches
those copies only for trainable leaves; a frozen weight and bias are cast afresh on every call: in
a LayerNorm-only bert-base step that is 144 extra kernels reading 340 MB of fp32 weights, the same
again in every evaluation batch and in every CUDA-graph replay. Casting the frozen nn.Linear tensors
once gives the matmuls the very same bf16 operands (autocast's cast is a plain round-to-nearest
.to(bf16), and a tensor already in bf16 passes through it untouched), so every result is bitwise
the same, and the frozen weights take half the memory.

Only nn.Linear parameters are cast: embeddings and LayerNorms are not autocast ops, or run in fp32
under autocast, so storing them in bf16 would change the arithmetic. A tensor that some other
module also holds (a tied weight) is left alone for the same reason.
"""

from __future__ import annotations

import torch
from torch import nn


def store_frozen_linears(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Cast every frozen nn.Linear weight and bias to dtype in place; returns the bytes saved.

    Only valid for a model that then runs under autocast to the same dtype.
    """
    held_elsewhere = {
        id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)
    }
    saved = 0
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        for param in module.parameters(recurse=False):
            # A tensor shared by two linears is already in dtype when the second one comes.
            if (
                param.requires_grad
                or id(param) in held_elsewhere
                or not param.is_floating_point()
                or param.dtype == dtype
            ):
                continue
            before = param.numel() * param.element_size()
            param.data = param.data.to(dtype)
            saved += before - param.numel() * param.element_size()
    return saved
