"""Unstructured L1-magnitude pruning with fine-tuning: zeros stay in the dense weights."""

from __future__ import annotations

import torch
from torch import nn

from dlas.compression import checkpoint
from dlas.compression.base import Compression
from dlas.compression.registry import COMPRESSIONS
from dlas.config.schema import TrainConfig, WeightPruningConfig
from dlas.data import DataBundle


def magnitude_masks(
    weights: dict[str, torch.Tensor], amount: float, scope: str
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks zeroing exactly round(amount * n) smallest-|w| weights, n counted
    over all layers (global) or in each layer (layerwise). Ranking indices instead of
    thresholding a value keeps the count exact when magnitudes tie (e.g. existing zeros)."""
    if scope == "layerwise":
        return {
            name: _keep_mask(w.abs().flatten(), amount).view_as(w) for name, w in weights.items()
        }
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = _keep_mask(flat, amount)
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = keep[offset : offset + w.numel()].view_as(w)
        offset += w.numel()
    return masks


def _keep_mask(magnitudes: torch.Tensor, amount: float) -> torch.Tensor:
    k = round(amount * magnitudes.numel())
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[torch.argsort(magnitudes, stable=True)[:k]] = False
    return keep


def apply_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.mul_(masks[name])


def sparsity_table(layers: dict[str, nn.Module]) -> dict[str, list]:
    table: dict[str, list] = {"layer": [], "shape": [], "weights": [], "zeros": [], "sparsity": []}
    for name, module in layers.items():
        w = module.weight.detach()
        zeros = int((w == 0).sum())
        table["layer"].append(name)
        table["shape"].append("x".join(map(str, w.shape)))
        table["weights"].append(w.numel())
        table["zeros"].append(zeros)
        table["sparsity"].append(zeros / w.numel())
    return table


@COMPRESSIONS.register("weight_pruning")
class WeightPruning(Compression):
    """Zero the ``amount`` smallest-magnitude conv/linear weights, then fine-tune with the
    mask re-applied after every optimizer step."""

    sparse_weights = True
    cfg: WeightPruningConfig

    def apply_torch(self, model: nn.Module, data: DataBundle, train_cfg: TrainConfig) -> nn.Module:
        layers = checkpoint.prunable_layers(model)
        path = checkpoint.checkpoint_path(self, train_cfg)
        with checkpoint.producing(path):  # concurrent jobs fine-tune one entry once
            hit = checkpoint.load_cached(self, model, path)
            if not hit:
                weights = {name: m.weight.detach() for name, m in layers.items()}
                masks = magnitude_masks(weights, self.cfg.amount, self.cfg.scope)
                apply_masks(layers, masks)
                self.metrics.update(
                    checkpoint.finetune(
                        model, data, train_cfg, self.cfg, hook=lambda _m: apply_masks(layers, masks)
                    )
                )
                checkpoint.store(self, model, path, sparsity=self._sparsity(layers))
        self.metrics["compression/cache_hit"] = float(hit)
        self.metrics["compression/sparsity"] = self._sparsity(layers)
        self.tables["compression/sparsity_per_layer.json"] = sparsity_table(layers)
        return model

    @staticmethod
    def _sparsity(layers: dict[str, nn.Module]) -> float:
        total = sum(m.weight.numel() for m in layers.values())
        zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
        return zeros / total
