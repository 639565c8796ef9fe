"""The whole-model check: a tuned build that runs slower in the model than the untuned one
gives way to it, and the run's records then rebuild what it kept."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from dlas.cache import Cache
from dlas.config.schema import DeviceConfig, MetaScheduleTuningConfig
from dlas.devices.local_cpu import LocalCPU
from dlas.devices.rpc import RPCDevice
from dlas.tuning import TuneContext, create_tuner, model_check
from dlas.tuning.model_check import TUNED, UNTUNED, check, why_unchecked
from tests.tuning.helpers import host_target, lowered, mlp_module, run_module


class FakeRunner:
    def __init__(self, ms_per_call: float) -> None:
        self.ms_per_call = ms_per_call

    def time(self, x, warmup: int, repeat: int) -> list[float]:
        return [self.ms_per_call] * repeat


class FakeDevice:
    """Runs each program in a fixed time, by the name it was loaded under."""

    one_program_at_a_time = False

    def __init__(self, **ms_per_call: float) -> None:
        self.cfg = DeviceConfig(name="fake", warmup_runs=1, timed_runs=10)
        self.ms = ms_per_call

    @contextmanager
    def load(self, program):
        yield FakeRunner(self.ms[program.description])


@pytest.mark.parametrize(("tuned_ms", "untuned_ms"), [(1.0, 2.0), (2.0, 1.0)])
def test_the_faster_build_is_kept(tuned_ms, untuned_ms):
    found = check("t", "u", np.zeros(1), FakeDevice(**{TUNED: tuned_ms, UNTUNED: untuned_ms}))
    assert found.keeps_tuned is (tuned_ms < untuned_ms)
    assert found.speedup.ratio == pytest.approx(untuned_ms / tuned_ms)
    assert found.metrics()["tune/kept_untuned"] == float(tuned_ms > untuned_ms)


def test_a_remote_board_or_no_device_is_not_checked():
    assert "no device" in why_unchecked(None)
    assert RPCDevice.one_program_at_a_time and not LocalCPU.one_program_at_a_time
    board = SimpleNamespace(cfg=DeviceConfig(name="pi"), one_program_at_a_time=True)
    assert "device=pi" in why_unchecked(board)
    assert why_unchecked(LocalCPU(DeviceConfig(name="local"))) == ""


def test_a_tuned_build_slower_in_the_model_gives_way(tmp_path, monkeypatch, capfd):
    """Searched records (no default-schedule records to fall back on) make the tuned module
    differ from the untuned one. The first build finds the tuned one faster and keeps it; a
    rebuild from the same records finds it slower and keeps the untuned build, whose logged
    records are none. Both compute the model, and the build kept exports and loads without
    TVM's warning per constant (timing it in place would leave it one: detached_copy)."""
    verdicts = iter([TUNED, UNTUNED])
    kept = []

    def fake_side_by_side(runners, x, warmup, repeat):
        assert set(runners) == {TUNED, UNTUNED} and x.shape == (1, 64)
        kept.append(next(verdicts))
        return {k: [1.0 if k == kept[-1] else 2.0] * repeat for k in runners}, repeat

    monkeypatch.setattr(model_check, "side_by_side", fake_side_by_side)
    mod, target = mlp_module(), host_target()
    x = np.random.default_rng(0).standard_normal((1, 64)).astype("float32")
    outputs, exported = [], []
    for _ in range(2):
        cfg = MetaScheduleTuningConfig(
            name="metaschedule",
            progress=False,
            trials=8,
            trials_per_iter=4,
            cost_model="random",
            include_defaults=False,
            strategy_options={"population_size": 16, "init_min_unmeasured": 4},
        )
        ctx = TuneContext(
            cache=Cache(tmp_path),
            work_dir=tmp_path / "work",
            device=LocalCPU(DeviceConfig(name="local", timed_runs=4)),
        )
        program = create_tuner(cfg).compile(lowered(mod), target, ctx)
        capfd.readouterr()
        library = str(tmp_path / f"model{len(kept)}.so")
        program.executable.export_library(library)
        tvm.runtime.load_module(library)
        assert "Scope" not in capfd.readouterr().err
        outputs.append(run_module(program.executable, x))
        records = ms.database.JSONDatabase(work_dir=str(ctx.artifacts["tuning"]))
        exported.append(len(records.get_all_tuning_records()))
        assert ctx.metrics["tune/kept_untuned"] == float(kept[-1] == UNTUNED)
    assert kept == [TUNED, UNTUNED]
    assert exported == [2, 0]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)


def test_untuned_builds_are_not_timed_again(tmp_path, monkeypatch):
    """Without records the tuned module is the untuned one: nothing to check."""
    monkeypatch.setattr(model_check, "side_by_side", lambda *a: pytest.fail("must not time"))
    cfg = MetaScheduleTuningConfig(name="metaschedule", progress=False, trials=0)
    ctx = TuneContext(
        cache=Cache(tmp_path),
        work_dir=tmp_path / "work",
        device=LocalCPU(DeviceConfig(name="local")),
    )
    create_tuner(cfg).compile(lowered(mlp_module()), host_target(), ctx)
    assert "tune/model_speedup" not in ctx.metrics
