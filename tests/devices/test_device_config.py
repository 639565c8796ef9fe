"""Device options: every YAML composes to a target; bad reach settings fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

import dlas.conf
from dlas.config import ConfigError, validate
from dlas.devices import DEVICES, DeviceUnavailableError, create_device

DEVICE_DIR = Path(dlas.conf.__file__).parent / "device"
# Target kind, and the triple of the CPU code, that each study device must generate.
EXPECTED = {
    "i7": ("llvm", "x86_64-linux-gnu"),
    "hikey_cpu": ("llvm", "aarch64-linux-gnu"),
    "hikey_gpu": ("opencl", "aarch64-linux-gnu"),
    "xavier": ("cuda", "aarch64-linux-gnu"),
    "xavier_cpu": ("llvm", "aarch64-linux-gnu"),
}


def test_the_issue_devices_exist():
    names = {p.stem for p in DEVICE_DIR.glob("*.yaml")}
    assert set(EXPECTED) | {"local_cpu", "cuda", "rpc"} <= names
    assert {"local", "cuda", "rpc"} <= set(DEVICES.names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_study_devices_name_their_target_and_host(compose_cfg, name):
    typed = validate(compose_cfg(f"device={name}"))
    target = create_device(typed.device).target
    kind, triple = EXPECTED[name]
    assert target.kind.name == kind
    cpu = target.host if target.host is not None else target
    assert str(cpu.attrs["mtriple"]) == triple
    if triple.startswith("aarch64"):
        assert typed.device.cross_compiler == "aarch64-linux-gnu-g++"
        assert typed.device.kind == "rpc" and typed.device.key and typed.device.tracker


def test_gpu_targets_get_no_cpu_attributes_merged_in(compose_cfg):
    # A schema default with keys would be merged into each YAML's target dict.
    for name in ("xavier", "hikey_gpu", "cuda"):
        target = validate(compose_cfg(f"device={name}")).device.target
        assert "mcpu" not in target, (name, target)
    xavier = create_device(validate(compose_cfg("device=xavier")).device).target
    assert str(xavier.attrs["arch"]) == "sm_72"
    assert str(xavier.host.attrs["mcpu"]) == "carmel"


def test_tracker_and_direct_reach_are_both_expressible(compose_cfg):
    via = validate(compose_cfg("device=rpc", "device.tracker=10.0.0.2:9190", "device.key=b"))
    assert (via.device.tracker, via.device.key) == ("10.0.0.2:9190", "b")
    dev = create_device(via.device)
    assert dev.endpoint.via_tracker and dev.endpoint.tracker_port == 9190
    direct = create_device(
        validate(compose_cfg("device=xavier", "device.host=10.0.0.3", "device.port=9091")).device
    )
    assert not direct.endpoint.via_tracker
    assert "RPC server 10.0.0.3:9091" in direct.endpoint.describe()


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("device.tracker=nohost", "device.tracker"),
        ("device.tracker=host:99999", "device.tracker"),
        ("device.port=0", "device.port"),
        ("device.timeout_s=0", "device.timeout_s"),
        ("device.tracker=null", "device.tracker"),
        ("device.key=null", "device.key"),
    ],
)
def test_bad_reach_settings_fail_validation(compose_cfg, override, option):
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        validate(compose_cfg("device=rpc", override))


def test_auto_target_with_measure_false_is_refused_without_connecting(compose_cfg):
    # Port 9 (discard) on localhost: nothing may be contacted, so nothing listening is fine.
    typed = validate(
        compose_cfg("device=rpc", "device.tracker=127.0.0.1:9", "device.measure=false")
    )
    with pytest.raises(DeviceUnavailableError, match=r"auto.*measure=false"):
        create_device(typed.device).check_available()


def test_missing_cross_compiler_is_named_before_any_work(compose_cfg):
    typed = validate(
        compose_cfg("device=hikey_cpu", "device.measure=false", "device.cross_compiler=null")
    )
    with pytest.raises(DeviceUnavailableError, match=r"aarch64-linux-gnu.*cross_compiler"):
        create_device(typed.device).check_available()
    typed = validate(
        compose_cfg("device=hikey_cpu", "device.measure=false", "device.cross_compiler=no-such-g++")
    )
    with pytest.raises(DeviceUnavailableError, match="no-such-g\\+\\+ is not on PATH"):
        create_device(typed.device).check_available()


def test_cuda_without_a_gpu_fails_before_any_work(compose_cfg):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU")
    device = create_device(validate(compose_cfg("device=cuda")).device)
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
        device.check_available()


def test_baseline_tuners_cannot_run_on_remote_devices(compose_cfg, monkeypatch):
    from dlas import validity
    from dlas.tuning import TUNERS, Tuner

    class Baseline(Tuner):
        uses_tvm = False

    monkeypatch.setitem(TUNERS._entries, "test_baseline", Baseline)
    typed = validate(compose_cfg("device=xavier_cpu"))
    typed.tuning.name = "test_baseline"
    with pytest.raises(validity.InvalidCombination, match="runs outside TVM"):
        validity.check(typed)
    typed.device.kind = "local"
    assert validity.baselines_run_in_this_process(typed) is None
