import torch
from torch import nn

from dlas.cache import Cache
from dlas.config.schema import DatasetConfig, ModelConfig, TrainConfig
from dlas.data import load_dataset
from dlas.models import create_model, evaluate, load_or_train, train
from dlas.models.train import recalibrate_batchnorm


def test_training_learns_the_embedded_dataset():
    cfg = DatasetConfig(name="digits", train=TrainConfig(epochs=2, lr=0.05))
    data = load_dataset(cfg)
    model = create_model("tiny_cnn", 10, image_size=32)
    before = evaluate(model, data)["top1"]
    after = evaluate(train(model, data, cfg.train), data)["top1"]
    assert after >= 0.4 and after >= before + 0.25  # chance is 0.1


def test_checkpoint_is_cached_by_the_config_that_determines_it(tmp_path):
    cache = Cache(tmp_path)
    data_cfg = DatasetConfig(name="digits", train=TrainConfig(epochs=1))
    data = load_dataset(data_cfg)
    model_cfg = ModelConfig(name="tiny_cnn")
    first, origin = load_or_train(model_cfg, data_cfg, data, cache)
    assert not origin["cache_hit"] and "pytorch_accuracy" in origin
    second, origin2 = load_or_train(model_cfg, data_cfg, data, cache)
    assert origin2["cache_hit"] and origin2["checkpoint"] == origin["checkpoint"]
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert (a == b).all()
    other = DatasetConfig(name="digits", train=TrainConfig(epochs=1, seed=1))
    assert load_or_train(model_cfg, other, data, cache)[1]["checkpoint"] != origin["checkpoint"]


def test_a_checkpoint_is_the_same_from_any_fresh_cache_for_the_same_seed(tmp_path):
    # Untrained (0 epochs), the checkpoint is the initial weights: the seed must decide them,
    # not whatever the process drew from torch's global generator before.
    data_cfg = DatasetConfig(name="digits", train=TrainConfig(epochs=0))
    data = load_dataset(data_cfg)

    def weights(cache_dir: str, seed: int) -> list[torch.Tensor]:
        cfg = DatasetConfig(name="digits", train=TrainConfig(epochs=0, seed=seed))
        model, _ = load_or_train(
            ModelConfig(name="tiny_cnn"), cfg, data, Cache(tmp_path / cache_dir)
        )
        torch.rand(7)  # the process's generator moves on between the two
        return list(model.state_dict().values())

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all((x == y).all() for x, y in zip(first, again, strict=True))
    assert any((x != y).any() for x, y in zip(first, other, strict=True))


def test_batchnorm_statistics_are_the_exact_average_over_the_training_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [(torch.randn(8, 3, 6, 6) * (i + 1) + i, None) for i in range(3)]
    model[1].running_mean.fill_(5.0)  # stale statistics, as after a short training
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        features = torch.cat([model[0](x) for x, _ in batches])
    expected_mean = features.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert model[1].momentum == 0.1  # restored
