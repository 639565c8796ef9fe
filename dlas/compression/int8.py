"""Post-training static int8 quantization, computed in int8 by the compiled TVM kernels.

PyTorch side: forward hooks record the input range of every conv/linear layer over
``calibration_batches`` batches of training images (fast, in eager mode). Relax side: each
layer is found again by its weight's bytes and rewritten to int8 x int8 -> int32
(:mod:`dlas.compression.quantize`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlas.compression.base import Compression
from dlas.compression.checkpoint import prunable_layers
from dlas.compression.quantize import Range, fingerprint, quantize_module
from dlas.compression.registry import COMPRESSIONS
from dlas.config.schema import Int8Config, TrainConfig
from dlas.data import DataBundle


def calibrate(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, list[Range]]:
    """Input range of each conv/linear call, keyed by weight fingerprint; a list per key, in
    call order, so that layers sharing identical weights keep their own ranges."""
    layers = prunable_layers(model)
    seen: dict[str, list[float]] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        low, high = seen.setdefault(module_name[module], [float("inf"), float("-inf")])
        seen[module_name[module]] = [min(low, float(x.min())), max(high, float(x.max()))]

    module_name = {m: n for n, m in layers.items()}
    handles = [m.register_forward_pre_hook(hook) for m in layers.values()]
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    ranges: dict[str, list[Range]] = {}
    for name, module in layers.items():
        if name in seen:
            key = fingerprint(module.weight.detach().numpy())
            ranges.setdefault(key, []).append(Range(*seen[name]))
    return ranges


@COMPRESSIONS.register("int8")
class Int8(Compression):
    acts_on_relax = True
    compute_dtypes = ("int8", "uint8")
    cfg: Int8Config

    def __init__(self, cfg: Int8Config) -> None:
        super().__init__(cfg)
        self.ranges: dict[str, list[Range]] = {}
        self.calibration_samples: list[torch.Tensor] = []

    def apply_torch(self, model: nn.Module, data: DataBundle, train_cfg: TrainConfig) -> nn.Module:
        size = self.cfg.calibration_batch_size
        batches = data.calibration_batches(self.cfg.calibration_batches * size, batch_size=size)
        self.ranges = calibrate(model, batches)
        self.calibration_samples = batches  # the peers' int8 (dlas.tuning.int8_peers) too
        self.metrics["compression/calibration_samples"] = float(sum(len(b) for b in batches))
        return model

    def apply_relax(self, mod: Any, calibration: list[Any]) -> Any:
        mod, table = quantize_module(mod, self.ranges)
        int8 = sum(s == "int8" for s in table["status"])
        self.report_relax(
            {
                "compression/int8_layers": float(int8),
                "compression/float_layers": float(len(table["status"]) - int8),
            },
            {"compression/int8_layers.json": table},
        )
        return mod

    def report_lowering(self, layers: list[dict[str, Any]]) -> None:
        """``compression.int8_isa``: the instruction family of the int8 kernels (the one most
        layers use; ``none`` when every layer runs widened int32 arithmetic)."""
        self.report_relax({}, {}, {"compression.int8_isa": kernel_family(layers)})


def kernel_family(layers: list[dict[str, Any]]) -> str:
    families = [r.get("kernel") for r in layers if r.get("kernel") not in (None, "widened")]
    return max(set(families), key=families.count) if families else "none"
