from dlas.cache import Cache
from dlas.config.schema import DatasetConfig, ModelConfig, TrainConfig
from dlas.data import load_dataset
from dlas.models import create_model, evaluate, load_or_train, train


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
