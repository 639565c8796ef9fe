"""Size and cost of a model: MACs, parameters, bytes, weight sparsity."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass (PyTorch's FLOP counter counts 2 per MAC)."""
    if hasattr(model, "macs"):  # a graph PyTorch does not execute (model=onnx) counts itself
        return int(model.macs(input_shape))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(input_shape))
    return counter.get_total_flops() // 2


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of conv and linear layers, the ones compression and algorithms act on."""
    return {
        name: module.weight.detach()
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }


def model_stats(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    params = list(model.parameters())
    weights = weight_tensors(model)
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return {
        "model/macs": float(count_macs(model, input_shape)),
        "model/params": float(sum(p.numel() for p in params)),
        "model/size_bytes": float(sum(p.numel() * p.element_size() for p in params)),
        "model/sparsity": zeros / total if total else 0.0,
    }
