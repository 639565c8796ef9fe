"""The tuning group's options compose, validate and refuse what they cannot do."""

from __future__ import annotations

import sys

import pytest

from dlas import validity
from dlas.config import validate
from dlas.config.schema import ConfigError
from dlas.tuning import TUNERS, create_tuner

OPTIONS = ["untuned", "metaschedule", "pytorch", "torch_compile", "onnxruntime"]


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_composes_and_is_registered(compose_cfg, name):
    typed = validate(compose_cfg(f"tuning={name}"))
    assert typed.tuning.name == name
    tuner = create_tuner(typed.tuning)
    assert tuner.uses_tvm == (name in ("untuned", "metaschedule"))
    assert not validity.problems(typed)


def test_metaschedule_options_reach_the_schema(compose_cfg):
    typed = validate(
        compose_cfg(
            "tuning=metaschedule",
            "tuning.trials=64",
            "tuning.trials_per_task=16",
            "tuning.trials_per_iter=8",
            "tuning.strategy=replay-trace",
            "tuning.runner=local",
            "tuning.task_scheduler=round-robin",
            "tuning.cost_model=random",
            "tuning.builder_workers=2",
            "tuning.builder_timeout_s=5",
            "++tuning.cost_model_options={num_warmup_samples:10}",
        )
    )
    t = typed.tuning
    assert (t.trials, t.trials_per_task, t.trials_per_iter) == (64, 16, 8)
    assert (t.strategy, t.runner, t.task_scheduler, t.cost_model) == (
        "replay-trace",
        "local",
        "round-robin",
        "random",
    )
    assert t.cost_model_options == {"num_warmup_samples": 10}
    assert (t.builder_workers, t.builder_timeout_s) == (2, 5.0)


@pytest.mark.parametrize(
    "override",
    [
        "tuning.trials=-1",
        "tuning.trials_per_iter=0",
        "tuning.trials_per_task=0",
        "tuning.population_per_trial=0",
        "tuning.strategy=annealing",
        "tuning.cost_model=gbdt",
        "tuning.task_scheduler=fifo",
        "tuning.builder_workers=0",
        "tuning.builder_timeout_s=0",
    ],
)
def test_bad_metaschedule_values_are_refused(compose_cfg, override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        validate(compose_cfg("tuning=metaschedule", override))


@pytest.mark.parametrize("override", ["tuning.runner=rpc", "tuning.builder=local"])
def test_unknown_metaschedule_components_are_refused_before_any_work(compose_cfg, override):
    """Builder and runner names come from dlas.tuning.metaschedule.BUILDERS / RUNNERS."""
    (reason,) = validity.problems(validate(compose_cfg("tuning=metaschedule", override)))
    assert override.replace("=", "='") in reason and "expected one of" in reason


@pytest.mark.parametrize(
    "option,override",
    [
        ("torch_compile", "tuning.mode=fast"),
        ("onnxruntime", "tuning.graph_optimization=max"),
        ("onnxruntime", "tuning.opset=7"),
    ],
)
def test_bad_baseline_values_are_refused(compose_cfg, option, override):
    with pytest.raises(ConfigError):
        validate(compose_cfg(f"tuning={option}", override))


@pytest.mark.parametrize("baseline", ["pytorch", "torch_compile", "onnxruntime"])
def test_baselines_only_run_on_local_devices(compose_cfg, baseline):
    typed = validate(compose_cfg(f"tuning={baseline}", "device=rpc"))
    with pytest.raises(validity.InvalidCombination, match=f"tuning={baseline}"):
        validity.check(typed)


def test_missing_onnxruntime_names_the_extra(compose_cfg, monkeypatch, tmp_path):
    from dlas.cache import Cache
    from dlas.data import InputSpec
    from dlas.tuning import TuneContext

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    tuner = create_tuner(validate(compose_cfg("tuning=onnxruntime")).tuning)
    ctx = TuneContext(cache=Cache(tmp_path), work_dir=tmp_path)
    with pytest.raises(ImportError, match=r"pip install dlas\[onnx\]"):
        tuner.wrap(None, InputSpec(3, 32, 10), ctx)


def test_registry_lists_the_options():
    assert set(OPTIONS) <= set(TUNERS.names())
