"""Structured channel pruning: the network physically shrinks and still runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlas.compression.channel_pruning import ChannelPruning
from dlas.config.schema import PruningConfig, TrainConfig
from dlas.models import create_model
from dlas.models.stats import count_macs
from tests.compression.helpers import random_data


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("resnet18", "cifar"),  # residual adds
        ("mobilenet_v2", "cifar"),  # depthwise convs, inverted residuals
        pytest.param("densenet161", "imagenet", marks=pytest.mark.slow),  # concatenations
    ],
)
def test_channel_pruned_model_runs_with_fewer_macs(name, variant):
    data = random_data(size=32, samples=8)
    model = create_model(name, 10, variant=variant, image_size=32).eval()
    convs_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    dense_macs = count_macs(model, data.spec.shape)

    pruning = ChannelPruning(PruningConfig(name="channel_pruning", amount=0.5, finetune_epochs=0))
    pruned = pruning.apply_torch(model, data, TrainConfig())

    x = torch.randn(2, 3, 32, 32)
    assert pruned(x).shape == (2, 10)  # the classifier's outputs are never pruned
    macs = count_macs(pruned, data.spec.shape)
    # Halving both the inputs and outputs of a conv quarters its MACs.
    assert macs < 0.4 * dense_macs
    assert pruning.metrics["compression/macs_ratio"] == pytest.approx(macs / dense_macs)
    after = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert after.keys() == convs_before.keys()
    assert sum(after.values()) == pytest.approx(0.5 * sum(convs_before.values()), rel=0.05)
    assert pruning.metrics["compression/params_ratio"] < 0.4
    table = pruning.tables["compression/channels_per_layer.json"]
    assert len(table["layer"]) == len(table["out_channels_after"])


def test_channel_pruning_fine_tunes_the_shrunk_model():
    data = random_data(size=16)
    model = create_model("tiny_cnn", 10, image_size=16)
    pruning = ChannelPruning(PruningConfig(name="channel_pruning", amount=0.5, finetune_epochs=1))
    pruned = pruning.apply_torch(model, data, TrainConfig(batch_size=8))
    assert pruning.metrics["compression/finetune_epochs"] == 1.0
    assert pruned(torch.randn(1, 3, 16, 16)).shape == (1, 10)
