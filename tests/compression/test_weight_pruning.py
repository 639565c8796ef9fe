"""Unstructured magnitude pruning: exact sparsity, masks kept through fine-tuning, caching."""

from __future__ import annotations

import copy

import pytest
import torch

from dlas.cache import Cache
from dlas.compression import checkpoint
from dlas.compression.weight_pruning import WeightPruning, magnitude_masks
from dlas.config.schema import ConfigError, TrainConfig, WeightPruningConfig
from dlas.models import create_model
from tests.compression.helpers import random_data


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in checkpoint.prunable_layers(model).items()}


@pytest.fixture(scope="module")
def resnet18_weights() -> dict[str, torch.Tensor]:
    return _weights(create_model("resnet18", 10, image_size=32))


@pytest.mark.parametrize("amount", [0.5, 0.9])
def test_layerwise_masks_prune_exactly_amount_of_every_layer(resnet18_weights, amount):
    weights = resnet18_weights
    masks = magnitude_masks(weights, amount, "layerwise")
    for name, w in weights.items():
        pruned = int((~masks[name]).sum())
        assert abs(pruned - amount * w.numel()) <= 1, name
        # L1 magnitude: nothing kept is smaller than anything pruned, in each layer.
        assert w[masks[name]].abs().min() >= w[~masks[name]].abs().max(), name


@pytest.mark.parametrize("amount", [0.5, 0.9])
def test_global_masks_prune_exactly_amount_of_all_weights(resnet18_weights, amount):
    weights = resnet18_weights
    masks = magnitude_masks(weights, amount, "global")
    total = sum(w.numel() for w in weights.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert abs(pruned - amount * total) <= 1
    kept = torch.cat([w[masks[n]].abs() for n, w in weights.items()])
    dropped = torch.cat([w[~masks[n]].abs() for n, w in weights.items()])
    assert kept.min() >= dropped.max()
    # One threshold over all layers: per-layer sparsities differ (they would not, layerwise).
    per_layer = [float((~m).float().mean()) for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.1


def test_ties_do_not_change_the_count():
    w = {"a": torch.zeros(10, 10), "b": torch.ones(3, 3)}
    masks = magnitude_masks(w, 0.5, "global")
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * 109)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_masks_survive_fine_tuning(scope):
    data = random_data()
    model = create_model("tiny_cnn", 10, image_size=16)
    before = {n: w.clone() for n, w in _weights(model).items()}
    expected = magnitude_masks(before, 0.6, scope)
    cfg = WeightPruningConfig(name="weight_pruning", amount=0.6, scope=scope, finetune_epochs=2)
    pruning = WeightPruning(cfg)
    pruning.apply_torch(model, data, TrainConfig(batch_size=8, lr=0.05))

    after = _weights(model)
    for name, w in after.items():
        assert torch.equal(w[~expected[name]], torch.zeros_like(w[~expected[name]])), name
    # Fine-tuning really moved the surviving weights (so the mask was actually under test).
    moved = sum(float((after[n] - before[n])[expected[n]].abs().sum()) for n in after)
    assert moved > 1e-3
    assert pruning.metrics["compression/sparsity"] == pytest.approx(0.6, abs=1e-3)
    table = pruning.tables["compression/sparsity_per_layer.json"]
    assert table["layer"] == list(after)
    assert sum(table["zeros"]) == sum(int((w == 0).sum()) for w in after.values())


def test_pruned_checkpoint_is_cached_by_checkpoint_and_config(tmp_path, monkeypatch):
    data = random_data()
    dense = create_model("tiny_cnn", 10, image_size=16)
    cfg = WeightPruningConfig(name="weight_pruning", amount=0.5, finetune_epochs=1)
    spec = {"model": "tiny_cnn", "test": 1}

    first = WeightPruning(cfg)
    first.bind(Cache(tmp_path), spec)
    pruned = first.apply_torch(copy.deepcopy(dense), data, TrainConfig(batch_size=16))
    assert first.metrics["compression/cache_hit"] == 0.0

    monkeypatch.setattr(checkpoint, "train", lambda *a, **k: pytest.fail("fine-tuned again"))
    second = WeightPruning(cfg)
    second.bind(Cache(tmp_path), spec)
    again = second.apply_torch(copy.deepcopy(dense), data, TrainConfig(batch_size=16))
    assert second.metrics["compression/cache_hit"] == 1.0
    for a, b in zip(pruned.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    other = WeightPruning(WeightPruningConfig(name="weight_pruning", amount=0.9, finetune_epochs=0))
    other.bind(Cache(tmp_path), spec)
    other.apply_torch(copy.deepcopy(dense), data, TrainConfig(batch_size=16))
    assert other.metrics["compression/cache_hit"] == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 1.0), ("amount", 0.0), ("finetune_epochs", -1), ("scope", "blockwise")],
)
def test_bad_values_fail_naming_the_option(field, value):
    with pytest.raises(ConfigError, match=f"compression.{field}"):
        WeightPruningConfig(name="weight_pruning", **{field: value})
