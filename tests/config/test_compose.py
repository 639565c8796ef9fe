import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from dlas import validity
from dlas.cli import options
from dlas.config import ConfigError, validate
from dlas.layers import GROUPS


def test_default_config_is_the_embedded_quick_start(compose_cfg):
    cfg = compose_cfg()
    assert cfg.dataset.name == "digits"
    assert (cfg.model.name, cfg.compression.name, cfg.algorithm.name) == (
        "resnet18",
        "dense",
        "direct",
    )
    assert (cfg.tuning.name, cfg.device.name) == ("untuned", "local_cpu")
    assert (cfg.device.warmup_runs, cfg.device.timed_runs) == (1, 150)
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    assert cfg[group].name  # every option names itself
    validate(cfg)


def test_command_line_overrides_reach_the_config(compose_cfg):
    cfg = compose_cfg("model=mobilenet_v2", "dataset=digits", "device.timed_runs=50")
    assert cfg.model.name == "mobilenet_v2"
    assert validate(cfg).device.timed_runs == 50


def test_wrong_type_fails_at_compose_time_naming_the_option(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("device.timed_runs=abc")
    assert "timed_runs" in str(err.value.__cause__ or err.value)
    assert isinstance(err.value.__cause__, ValidationError)


def test_unknown_key_fails_at_compose_time(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("device.timed_run=5")
    cause = err.value.__cause__
    assert isinstance(cause, ConfigKeyError | ConfigAttributeError) and "timed_run" in str(cause)


def test_appended_unknown_key_is_refused_before_any_work(compose_cfg):
    cfg = compose_cfg("+device.timed_run=5")  # Hydra lets `+` add keys even to schemas
    with pytest.raises(ConfigError, match=r"device\.timed_run .*did you mean device\.timed_runs"):
        validate(cfg)


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("device.timed_runs=0", "device.timed_runs"),
        ("device.warmup_runs=-1", "device.warmup_runs"),
        ("dataset.train.epochs=-2", "dataset.train.epochs"),
        ("model.variant=huge", "model.variant"),
    ],
)
def test_out_of_range_values_fail_before_any_work(compose_cfg, override, option):
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        validate(compose_cfg(override))


def test_unknown_group_option_lists_the_available_ones(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("model=nope")
    message = str(err.value)
    assert "resnet18" in message and "mobilenet_v2" in message
    assert "\tbase\n" not in message  # only real choices are listed, not schemas


@pytest.mark.parametrize(
    ("override", "listed"),
    [
        ("tuning.name=metaschedul", "did you mean metaschedule?"),
        ("algorithm.name=typo", "direct, gemm"),
        ("compression.name=typo", "dense"),
        ("device.kind=quantum", "cuda, local, rpc"),
        ("dataset.name=typo", "digits"),
    ],
)
def test_unregistered_names_are_refused_before_any_work(compose_cfg, override, listed):
    option = override.partition("=")[0]
    with pytest.raises(validity.InvalidCombination, match=option.replace(".", r"\.")) as err:
        validity.check(validate(compose_cfg(override)))
    assert listed in str(err.value)
