"""algorithm=auto: each conv runs its fastest eligible candidate, timed here and cached."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from dlas.algorithms import auto as auto_module
from dlas.algorithms import timing
from dlas.algorithms.auto import Auto
from tests.algorithms.util import (
    Case,
    conv_module,
    host_target,
    random_weights,
    relative_error,
    torch_reference,
)
from tests.algorithms.util import run as build_and_run

CASES = [
    Case(1, 16, 12, 12, 16, 3, pad=1),  # winograd-eligible 3x3 s1
    Case(1, 16, 12, 12, 24, 1),  # 1x1: winograd would fall back, so it is not a candidate
]


def build(cases, weights, cache_dir, sparsity=0.0):
    rng = np.random.default_rng(0)
    biases = [rng.standard_normal(c.oc).astype("float32") for c in cases]
    xs = [rng.standard_normal((c.n, c.c, c.h, c.w)).astype("float32") for c in cases]
    # The per-layer choice alone (the whole-graph race has tests of its own below).
    algo = Auto(cache_dir=str(cache_dir), repeat=3, graph_candidates=[])
    outs, lowered = build_and_run(conv_module(cases, weights, biases), algo, xs, host_target())
    for case, x, w, b, out in zip(cases, xs, weights, biases, outs, strict=True):
        ref = torch_reference(case, x, w, b)
        assert np.std(ref) > 1e-3 and relative_error(out, ref) < 1e-4
    return lowered.layers


def test_auto_picks_the_fastest_measured_candidate_and_caches_the_times(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    weights = [random_weights(c, 0.0, rng) for c in CASES]
    rows = build(CASES, weights, tmp_path)
    timed = [r for r in rows if r.get("candidates")]
    assert len(timed) == 2
    for row in timed:
        times = dict(item.split("=") for item in row["candidates"].split(", "))
        fastest = min(times, key=lambda n: float(times[n].removesuffix("ms")))
        assert row["algorithm"] == fastest and not row["fallback"]
    assert "winograd" in timed[0]["candidates"] and "winograd" not in timed[1]["candidates"]
    assert len(list((tmp_path / "algorithm_choices").glob("*.json"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a cached workload was timed again")

    monkeypatch.setattr(auto_module, "time_convs", refuse)
    again = build(CASES, weights, tmp_path)
    assert [r["algorithm"] for r in again] == [r["algorithm"] for r in rows]


def test_auto_times_sparse_candidates_on_pruned_weights(tmp_path):
    case = Case(1, 16, 8, 8, 32, 3, pad=1)
    weights = [random_weights(case, 0.9, np.random.default_rng(2))]
    (row,) = build([case], weights, tmp_path)
    assert "sparse_direct" in row["candidates"] and "direct" in row["candidates"]
    # A few zeros (an int8 model's weights that round to 0) are not pruning: no CSR kernel won.
    weights = [random_weights(case, 0.1, np.random.default_rng(2))]
    assert 0 < np.mean(weights[0] == 0) < auto_module.SPARSE_MIN_ZEROS
    (row,) = build([case], weights, tmp_path)
    assert "sparse" not in row["candidates"] and "direct" in row["candidates"]


def test_auto_refuses_a_target_it_cannot_time(compose_cfg):
    from dlas import validity
    from dlas.config import validate

    reasons = validity.problems(validate(compose_cfg("algorithm=auto", "device=xavier_cpu")))
    assert any("algorithm=auto times its candidates on this machine" in r for r in reasons)
    with pytest.raises(ValueError, match="candidates must be"):
        Auto(candidates=["fft"])
    with pytest.raises(ValueError, match="not a whole-graph algorithm; expected among blocked"):
        Auto(graph_candidates=["direct"])


def test_int8_candidates_are_timed_with_their_requantizing_epilogue():
    """An int8 layer's epilogue costs as much as its products on narrow layers and differs by
    form (channels or pixels in the lanes): the timed module ends in it, as the model does."""
    from dlas.algorithms.shapes import ConvSpec

    def spec(dtype, out_dtype):
        return ConvSpec(1, 8, 8, 8, 16, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, dtype, out_dtype)

    weight = np.ones((16, 8, 1, 1), "int8")
    int8 = timing.conv_module(spec("uint8", "int32"), weight)["main"]
    assert str(int8.ret_ty.dtype) == "uint8"
    assert int8.script().count("R.clip(") == 1
    fp32 = timing.conv_module(spec("float32", "float32"), weight.astype("float32"))["main"]
    assert str(fp32.ret_ty.dtype) == "float32" and "R.clip(" not in fp32.script()
    times = timing.time_convs(spec("uint8", "int32"), weight, ["direct"], host_target(), 3)
    assert times["direct"] > 0


def test_candidates_are_timed_round_robin_with_cold_caches(monkeypatch):
    """A layer's candidates take turns, so that a drift in the machine's speed while the layer
    is timed reaches all of them, not just the one being timed then; each call starts with
    the caches flushed, as a layer's weights are in a model at batch 1."""
    from dlas.algorithms.shapes import ConvSpec

    calls, flushed = [], []
    original = timing.cold_timer

    def recording(vm, dev, count):
        timer = original(vm, dev, count)

        def timed(*a):
            result = timer(*a)
            calls.extend([id(vm)] * len(result.results))
            return result

        return timed

    def evaluator(module, *args, **kwargs):
        flushed.append(kwargs.get("cache_flush_bytes", 0))
        return module_evaluator(module, *args, **kwargs)

    module_evaluator = tvm.runtime.Module.time_evaluator
    monkeypatch.setattr(tvm.runtime.Module, "time_evaluator", evaluator)
    monkeypatch.setattr(timing, "cold_timer", recording)
    spec = ConvSpec(1, 8, 8, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "float32", "float32")
    weight = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype("float32")
    times = timing.time_convs(spec, weight, ["direct", "winograd"], host_target(), 7)
    assert sorted(times) == ["direct", "winograd"] and min(times.values()) > 0
    first, second = calls[0], next(c for c in calls if c != calls[0])
    assert calls.count(first) == calls.count(second) == 7
    rounds = [c for i, c in enumerate(calls) if i == 0 or c != calls[i - 1]]
    assert timing.ROUNDS > 1 and rounds == [first, second] * timing.ROUNDS
    assert len(flushed) == 2 * timing.ROUNDS
    assert min(flushed) >= timing.flush_bytes() >= 16 << 20


@pytest.fixture(scope="module")
def small_cnn():
    import torch
    from torch import nn

    from dlas.compiler.export import export
    from dlas.data import InputSpec
    from tests.algorithms.util import varying_references
    from tests.conftest import calibrate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),  # Winograd or not: blocked times both
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    spec = InputSpec(3, 16, 10)
    calibrate_batchnorm(model, spec.shape)
    return export(model, spec), *varying_references(model, spec.shape)


@pytest.mark.parametrize("faster", ["blocked", "blocked_timed", "auto"])
def test_a_faster_whole_graph_layout_replaces_the_per_layer_choice(
    small_cnn, tmp_path, monkeypatch, faster
):
    """The per-layer choice is raced against blocked as whole models, blocked twice: with the
    kernels its layer sizes give (Winograd on the 16x16 3x3 conv) and with each conv's kernel
    timed in its layout (spatial_pack's here). The fastest lowering is the one built, the
    table's last row says which and every time, and the decision is cached (a second
    lowering times nothing)."""
    from tvm import relax

    from dlas.algorithms import lower
    from dlas.compiler.build import build as build_library

    mod, inputs, refs = small_cnn
    raced, kernels_timed = [], []
    scripted = {faster: 1.0}
    for name in ("auto", "blocked", "blocked_timed"):
        scripted.setdefault(name, 1.0 + len(scripted))

    def scripted_times(libraries, target, repeat, rounds=auto_module.ROUNDS):
        raced.append((sorted(libraries), repeat, rounds))
        return {name: scripted[name] for name in libraries}

    def scripted_kernel_times(spec, weight, kernels, target, repeat, rounds):
        kernels_timed.append(kernels)
        return {
            kernel: {"winograd": 3.0, "winograd_2x2": 2.0}.get(kernel, 1.0) for kernel in kernels
        }

    monkeypatch.setattr(auto_module, "time_models", scripted_times)
    monkeypatch.setattr(auto_module, "time_blocked_convs", scripted_kernel_times)
    target = host_target()
    for _ in range(2):
        lowered = lower(mod, Auto(["direct"], cache_dir=str(tmp_path)), target)
        *convs, graph = lowered.layers
        assert graph["op"] == "graph" and graph["algorithm"] == faster
        assert graph["candidates"] == ", ".join(f"{k}={v:.4g}ms" for k, v in scripted.items())
        conv_rows = [row for row in convs if row["op"] == "conv2d"]
        assert {row["algorithm"] for row in conv_rows} == (
            {"direct"} if faster == "auto" else {"blocked"}
        )
        computes = [row.get("compute") for row in conv_rows]
        if faster == "blocked_timed":
            assert computes == ["spatial_pack"] * 3
            assert conv_rows[2]["candidates"] == "spatial_pack=1ms, winograd_2x2=2ms, winograd=3ms"
        elif faster == "blocked":
            assert computes == ["spatial_pack", "spatial_pack", "winograd"]
    # The race makes 5x the calls of a layer's candidates (20 in 5 rounds by default); the
    # second lowering read the cached decision.
    assert raced == [(["auto", "blocked", "blocked_timed"], 100, 25)]
    # and the cached kernel times
    assert kernels_timed == [["spatial_pack", "winograd", "winograd_2x2"]]
    vm = relax.VirtualMachine(build_library(lowered.mod, target), tvm.cpu())
    for x, ref in zip(inputs, refs, strict=True):
        out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))[0].numpy()
        assert relative_error(out, ref) <= 1e-4


def test_blocked_whose_timed_kernels_are_its_own_is_raced_once(small_cnn, tmp_path, monkeypatch):
    """Where every timed kernel is the one blocked's sizes give, the two blocked lowerings
    are the same program: it is timed once."""
    from dlas.algorithms import lower

    raced = []

    def scripted_times(libraries, target, repeat, rounds=auto_module.ROUNDS):
        raced.append(sorted(libraries))
        return dict.fromkeys(libraries, 1.0)

    def its_own_kernel_fastest(spec, weight, kernels, target, repeat, rounds):
        return {kernel: 1.0 if kernel == "winograd" else 2.0 for kernel in kernels}

    monkeypatch.setattr(auto_module, "time_models", scripted_times)
    monkeypatch.setattr(auto_module, "time_blocked_convs", its_own_kernel_fastest)
    mod, *_ = small_cnn
    lower(mod, Auto(["direct"], cache_dir=str(tmp_path)), host_target())
    assert raced == [["auto", "blocked"]]


def test_for_the_tuner_the_raced_choice_stays_unscheduled(small_cnn, tmp_path, monkeypatch):
    """schedule=False (tuning=metaschedule): the race builds the per-layer choice with its
    default schedules, and still hands over its functions unscheduled, for MetaSchedule to
    tune (the race once scheduled them in place, leaving the tuner nothing to tune)."""
    from tvm import tirx

    from dlas.algorithms import lower

    def scripted_times(libraries, target, repeat, rounds=auto_module.ROUNDS):
        return {name: 1.0 if name == "auto" else 2.0 for name in libraries}

    monkeypatch.setattr(auto_module, "time_models", scripted_times)
    monkeypatch.setattr(
        auto_module,
        "time_blocked_convs",
        lambda spec, weight, kernels, *a: dict.fromkeys(kernels, 1.0),
    )
    mod, *_ = small_cnn
    lowered = lower(mod, Auto(["direct"], cache_dir=str(tmp_path)), host_target(), schedule=False)
    assert lowered.layers[-1]["algorithm"] == "auto"
    functions = [f for _, f in lowered.mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert functions and not [f for f in functions if f.attrs.get("tirx.is_scheduled")]


def test_whole_models_are_timed_warmed_up_as_the_run_times_its_latency(small_cnn, monkeypatch):
    """time_models builds real libraries and times them with the run's protocol
    (measure.round_robin: each block after its own untimed calls): every one gets a positive
    median. Raced with one untimed call per block, lowerings ran 25-35% slower than in the run,
    and in another order."""
    from dlas import measure
    from dlas.algorithms import lower

    blocks = []
    original = measure.round_robin

    def recording(runners, x, rounds, calls, **kwargs):
        blocks.append((sorted(runners), x.shape, rounds, calls, kwargs))
        return original(runners, x, rounds, calls, **kwargs)

    monkeypatch.setattr(measure, "round_robin", recording)
    mod, *_ = small_cnn
    target = host_target()
    libraries = {name: lower(mod, name, target).mod for name in ("direct", "blocked")}
    times = auto_module.time_models(libraries, target, repeat=5, rounds=2)
    assert sorted(times) == ["blocked", "direct"] and min(times.values()) > 0
    assert blocks == [(["blocked", "direct"], (1, 3, 16, 16), 2, 3, {})]
    assert measure.WARMUP_S > 0  # round_robin's default warm-up, as the run's latency


def test_no_graph_candidates_leaves_the_per_layer_choice(small_cnn, monkeypatch):
    from dlas.algorithms import lower

    def refuse(*args, **kwargs):
        raise AssertionError("nothing to race, yet whole models were timed")

    monkeypatch.setattr(auto_module, "time_models", refuse)
    mod, *_ = small_cnn
    lowered = lower(mod, Auto(["direct"], graph_candidates=[]), host_target())
    assert all(row["op"] != "graph" for row in lowered.layers)


def test_blocked_kernels_are_timed_as_they_run_in_the_blocked_layout():
    """Each kernel blocked can run a conv with is built alone, from blocked input to blocked
    output, and timed: both compute the conv PyTorch does."""
    import torch
    from tvm import relax

    from dlas.algorithms import blocked
    from dlas.algorithms.lowering import schedule_defaults
    from dlas.algorithms.shapes import ConvSpec
    from dlas.compiler.build import build as build_library

    spec = ConvSpec(1, 32, 12, 12, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "float32", "float32")
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((16, 32, 3, 3)).astype("float32")
    x = rng.standard_normal((1, 32, 12, 12)).astype("float32")
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1)
    ref = ref.numpy()
    assert np.std(ref) > 1e-3
    kernels = blocked.kernel_options(spec, blocked_input=True)
    assert kernels == ["spatial_pack", "winograd", "winograd_2x2"]
    target = host_target()
    to_blocked = x.reshape(1, 2, 16, 12, 12).transpose(0, 1, 3, 4, 2)
    for kernel in kernels:
        mod = schedule_defaults(blocked.conv_module(spec, weight, kernel), target)
        vm = relax.VirtualMachine(build_library(mod, target), tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(to_blocked), tvm.cpu())).numpy()
        assert relative_error(out.transpose(0, 1, 4, 2, 3).reshape(ref.shape), ref) < 1e-4
    times = auto_module.time_blocked_convs(spec, weight, kernels, target, repeat=4, rounds=2)
    assert sorted(times) == kernels and min(times.values()) > 0
