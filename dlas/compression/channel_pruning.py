"""Structured L1 pruning of output channels with Torch-Pruning, then fine-tuning.

Torch-Pruning's dependency graph prunes coupled layers together (the convs feeding one residual
add, a depthwise conv and its producer, BatchNorm, DenseNet concatenations), so the network
physically shrinks and still runs.
"""

from __future__ import annotations

import torch
from torch import nn

from dlas.compression import checkpoint
from dlas.compression.base import Compression
from dlas.compression.registry import COMPRESSIONS
from dlas.config.schema import PruningConfig, TrainConfig
from dlas.data import DataBundle
from dlas.models.stats import count_macs


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers producing the class scores: their outputs are the classes, never pruned."""
    outputs = [
        m for m in checkpoint.prunable_layers(model).values() if _out_channels(m) == num_classes
    ]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return outputs or linears[-1:]


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def prune_channels(
    model: nn.Module, example: torch.Tensor, amount: float, num_classes: int
) -> nn.Module:
    """Remove ``amount`` of the output channels of every prunable group, ranked by the L1
    norm of the group's weights (in place; returns the model)."""
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=classifier_layers(model, num_classes),
    )
    pruner.step()
    return model


@COMPRESSIONS.register("channel_pruning")
class ChannelPruning(Compression):
    cfg: PruningConfig

    def apply_torch(self, model: nn.Module, data: DataBundle, train_cfg: TrainConfig) -> nn.Module:
        import torch_pruning as tp

        example = torch.zeros(data.spec.shape)
        model.eval()
        before = {n: _out_channels(m) for n, m in checkpoint.prunable_layers(model).items()}
        dense_params = sum(p.numel() for p in model.parameters())
        dense_macs = count_macs(model, data.spec.shape)
        # Pruning is deterministic given the trained weights, so a cache hit re-prunes (cheap)
        # to get the shapes, then loads the fine-tuned weights.
        prune_channels(model, example, self.cfg.amount, data.spec.num_classes)
        path = checkpoint.checkpoint_path(self, train_cfg, {"torch_pruning": tp.__version__})
        with checkpoint.producing(path):  # concurrent jobs fine-tune one entry once
            hit = checkpoint.load_cached(self, model, path)
            if not hit:
                self.metrics.update(checkpoint.finetune(model, data, train_cfg, self.cfg))
                checkpoint.store(self, model, path)
        layers = checkpoint.prunable_layers(model)
        after = {n: _out_channels(m) for n, m in layers.items()}
        self.metrics["compression/cache_hit"] = float(hit)
        self.metrics["compression/channels_kept"] = sum(after.values()) / sum(before.values())
        self.metrics["compression/dense_params"] = float(dense_params)
        self.metrics["compression/params_ratio"] = (
            sum(p.numel() for p in model.parameters()) / dense_params
        )
        self.metrics["compression/macs_ratio"] = count_macs(model, data.spec.shape) / dense_macs
        self.tables["compression/channels_per_layer.json"] = {
            "layer": list(after),
            "out_channels_before": [before[n] for n in after],
            "out_channels_after": list(after.values()),
        }
        return model.eval()
