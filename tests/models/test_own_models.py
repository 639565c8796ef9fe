"""Models users bring: a Python callable from a file, an ONNX file; and bad input refused
before any work, with the path and what was expected."""

from __future__ import annotations

import hashlib
import textwrap
import warnings
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from dlas import pipeline
from dlas.config import ConfigError, validate
from dlas.models.zoo import TinyCNN
from dlas.tracking import tracking_uri
from dlas.validity import InvalidCombination
from tests.conftest import calibrate_batchnorm

NET = """
from torch import nn


def build(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, {width}, 3, padding=1), nn.BatchNorm2d({width}), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear({width}, num_classes),
    )


def not_a_module(num_classes):
    return "a string"
"""

FFT_NET = """
import torch
from torch import nn


class Spectral(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.fc = nn.Linear(3, k)

    def forward(self, x):
        return self.fc(torch.fft.rfft2(x).abs().mean(dim=(2, 3)))


def build(num_classes):
    return Spectral(num_classes)
"""

FAST = ("dataset.test_limit=8", "device.timed_runs=2", "eval.eager_baseline=false")


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _last_run(cfg):
    client = MlflowClient(tracking_uri(cfg))
    return client.get_run(mlflow.last_active_run().info.run_id)


def test_custom_model_from_a_file_is_trained_cached_and_compiled(compose_cfg, tiny, tmp_path):
    from dlas.models.train import checkpoint_spec

    net = _write(tmp_path / "net.py", NET.format(width=8))
    cfg = compose_cfg(*tiny("model=custom", f"model.source={net}:build", *FAST))
    metrics = pipeline.run(cfg)
    run = _last_run(cfg)
    assert run.info.status == "FINISHED" and run.data.tags["dlas.model.logged"] == "true"
    assert metrics["model/params"] == 3 * 8 * 9 + 8 + 16 + 8 * 10 + 10
    # The compiled network computes what the PyTorch one does, on logits that vary.
    assert metrics["compare/logit_spread"] > 1e-3
    assert metrics["compare/max_abs_logit_diff"] < 1e-2 * metrics["compare/logit_spread"]

    # The file's content keys the checkpoint: an edited network is a new entry.
    spec = checkpoint_spec(validate(cfg).model, validate(cfg).dataset)
    assert spec["source_sha256"] == hashlib.sha256(net.read_bytes()).hexdigest()
    _write(net, NET.format(width=12))
    assert checkpoint_spec(validate(cfg).model, validate(cfg).dataset) != spec


def test_custom_model_takes_a_checkpoint(compose_cfg, tiny, tmp_path):
    from dlas.cache import Cache
    from dlas.data import load_dataset
    from dlas.models import load_or_train
    from dlas.models.custom import build_custom

    net = _write(tmp_path / "net.py", NET.format(width=8))
    source = f"{net}:build"
    reference = build_custom(source, 10)
    torch.nn.init.normal_(reference[0].weight)
    torch.save(reference.state_dict(), tmp_path / "ckpt.pt")
    cfg = validate(
        compose_cfg(
            *tiny("model=custom", f"model.source={source}", f"model.weights={tmp_path}/ckpt.pt"),
            "dataset.train.epochs=0",
        )
    )
    model, _ = load_or_train(cfg.model, cfg.dataset, load_dataset(cfg.dataset), Cache(tmp_path))
    assert torch.equal(model[0].weight, reference[0].weight)


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    model = TinyCNN(10)
    calibrate_batchnorm(model, (1, 3, 32, 32))
    path = tmp_path / "tiny.onnx"
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=18,
        dynamo=False,  # the TorchScript exporter: ten times faster here, for the same graph
    )
    return path


def test_onnx_file_runs_through_tvm_and_onnx_runtime_runs_the_same_file(
    compose_cfg, tiny, tiny_onnx
):
    cfg = compose_cfg(*tiny("model=onnx", f"model.path={tiny_onnx}", *FAST))
    metrics = pipeline.run(cfg)
    run = _last_run(cfg)
    tags = run.data.tags
    assert tags["dlas.model.training"].startswith("does not apply")
    assert tags["dlas.model.reference"] == "onnxruntime"
    assert "train/seconds" in metrics and metrics["model/macs"] > 1e5
    # TVM's import of the file agrees with ONNX Runtime on it, on logits that vary.
    assert metrics["compare/logit_spread"] > 1e-3
    assert metrics["compare/max_abs_logit_diff"] < 1e-3 * max(1.0, metrics["compare/logit_spread"])
    assert tags["dlas.model.logged"] == "true"

    ort_cfg = compose_cfg(
        *tiny("model=onnx", f"model.path={tiny_onnx}", "tuning=onnxruntime", *FAST)
    )
    pipeline.run(ort_cfg)
    import onnx

    uri = f"runs:/{mlflow.last_active_run().info.run_id}/model"
    logged = mlflow.onnx.load_model(uri)
    assert logged.SerializeToString() == onnx.load(str(tiny_onnx)).SerializeToString()
    # Served as the run timed it: ONNX Runtime's CPU provider, the run's graph optimizations.
    flavor = mlflow.models.get_model_info(uri).flavors["onnx"]
    assert flavor["providers"] == ["CPUExecutionProvider"]
    assert flavor["onnx_session_options"]["graph_optimization_level"] == 99  # "all"


# --- bad input: refused before any work ----------------------------------------------------
def test_unreadable_paths_are_refused_when_the_config_is_validated(compose_cfg, tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"model.path=.*nope.onnx.*not a readable ONNX file"):
        validate(compose_cfg(*tiny("model=onnx", f"model.path={tmp_path}/nope.onnx")))
    with pytest.raises(ConfigError, match=r"model.source=.*missing.py.*readable Python file"):
        validate(compose_cfg(*tiny("model=custom", f"model.source={tmp_path}/missing.py:build")))
    with pytest.raises(ConfigError, match="expected path/to/file.py:callable"):
        validate(compose_cfg(*tiny("model=custom", "model.source=no_callable_given")))


def _refused(cfg) -> str:
    with pytest.raises(InvalidCombination) as err:
        pipeline.run(cfg)
    assert not (Path(cfg.paths.mlruns_dir)).exists()  # nothing recorded, nothing loaded
    return str(err.value)


def test_bad_models_are_refused_before_any_work(compose_cfg, tiny, tmp_path, tiny_onnx):
    net = _write(tmp_path / "net.py", NET.format(width=4))
    reason = _refused(compose_cfg(*tiny("model=custom", f"model.source={net}:not_a_module")))
    assert str(net) in reason and "returned str; expected a torch.nn.Module" in reason
    reason = _refused(compose_cfg(*tiny("model=custom")))
    assert "model.source=path/to/file.py:build" in reason
    reason = _refused(
        compose_cfg(*tiny("model=onnx", f"model.path={tiny_onnx}", "dataset.image_size=48"))
    )
    assert str(tiny_onnx) in reason and "[1, 3, 32, 32]" in reason and "[1, 3, 48, 48]" in reason
    reason = _refused(
        compose_cfg(*tiny("model=onnx", f"model.path={tiny_onnx}", "compression=weight_pruning"))
    )
    assert "use compression=dense" in reason
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf at all")
    assert "not a readable ONNX model" in _refused(
        compose_cfg(*tiny("model=onnx", f"model.path={bogus}"))
    )


def test_unconvertible_operators_are_named_before_training(compose_cfg, tiny, tmp_path, tiny_onnx):
    import onnx

    graph = onnx.load(str(tiny_onnx))
    graph.graph.node[0].op_type = "NoSuchOp"
    odd = tmp_path / "odd.onnx"
    onnx.save(graph, str(odd))
    assert "cannot convert operator(s) NoSuchOp" in _refused(
        compose_cfg(*tiny("model=onnx", f"model.path={odd}"))
    )

    # A PyTorch network TVM cannot import fails before it is trained; no checkpoint is cached.
    spectral = _write(tmp_path / "spectral.py", FFT_NET)
    cfg = compose_cfg(*tiny("model=custom", f"model.source={spectral}:build"))
    with pytest.raises(RuntimeError, match=r"spectral.py:build.*TVM cannot import.*fft"):
        pipeline.run(cfg)
    # Only the entry's lock file (dlas.cache.entry_lock) may stay: no checkpoint, no spec.
    assert not [p for p in (tmp_path / "cache").glob("models/*") if p.suffix != ".lock"]
