"""lower(): the interface the pipeline uses, the layer table, and the default schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
import yaml
from tvm import relax, tirx

import dlas.conf
from dlas.algorithms import ALGORITHMS, Algorithm, LoweredModule, lower
from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.models import create_model
from tests.algorithms.util import KERNELS, host_target, relative_error
from tests.conftest import calibrate_batchnorm

CONF = Path(dlas.conf.__file__).parent / "algorithm"
ROW_KEYS = {"layer", "op", "data_shape", "weight_shape", "strides", "padding", "groups",
            "algorithm", "fallback"}  # fmt: skip


@pytest.fixture(scope="module")
def target():
    return host_target()


@pytest.fixture(scope="module")
def tiny_mod():
    """tiny_cnn: conv, BN, relu, depthwise, 1x1, residual add, stride 2, pool, linear."""
    torch.manual_seed(0)
    spec = InputSpec(3, 16, 10)
    model = create_model("tiny_cnn", 10, image_size=16)
    calibrate_batchnorm(model, spec.shape)
    return export(model, spec)


def test_registry_and_configs():
    names = ALGORITHMS.names()
    assert names == sorted(
        [
            "auto",
            "blocked",
            "direct",
            "gemm",
            "per_layer",
            "spatial_pack",
            "sparse_direct",
            "sparse_gemm",
            "sparse_spatial_pack",
            "winograd",
        ]
    )
    for name in names:
        cls = ALGORITHMS.get(name)
        assert issubclass(cls, Algorithm) and cls.name == name
        assert cls.sparse == name.startswith("sparse_")
        assert cls.composite == (name in ("per_layer", "auto"))
        conf = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        assert conf["name"] == name and conf["defaults"][-1] == "_self_"
    with pytest.raises(KeyError, match="spatial_pack"):
        ALGORITHMS.get("fft")


def test_layer_table(tiny_mod, target):
    lowered = lower(tiny_mod, "gemm", target)
    assert isinstance(lowered, LoweredModule)
    rows = lowered.layers
    assert [r["layer"] for r in rows] == list(range(len(rows)))
    assert [r["op"] for r in rows] == ["conv2d"] * 5 + ["dense"]
    assert all(set(r) >= ROW_KEYS for r in rows)
    depthwise = rows[1]
    assert depthwise["groups"] == 16 and depthwise["weight_shape"] == [16, 1, 3, 3]
    # gemm has no depthwise form: the row says what ran instead, and why.
    assert depthwise["algorithm"] == "direct" and "depthwise" in depthwise["fallback"]
    assert all(r["algorithm"] == "gemm" and r["fallback"] == "" for r in rows if r is not depthwise)
    assert rows[2]["strides"] == [1, 1] and rows[3]["strides"] == [2, 2]
    assert rows[3]["padding"] == [1, 1, 1, 1]


def test_algorithm_argument_forms(tiny_mod, target):
    by_name = lower(tiny_mod, "direct", target, schedule=False).layers
    by_class = lower(tiny_mod, ALGORITHMS.get("direct"), target, schedule=False).layers
    instance = ALGORITHMS.get("direct")()
    by_instance = lower(tiny_mod, instance, target, schedule=False).layers
    assert by_name == by_class == by_instance
    assert instance.layers == []  # lower() works on a fresh instance


def _prim_funcs(mod: tvm.IRModule) -> dict[str, tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def _param_types(mod: tvm.IRModule) -> dict[str, list[tuple[tuple[int, ...], str]]]:
    """Shapes and dtypes of each PrimFunc's arguments, read from its call_tir site."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    found = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            args = [*expr.args[1].fields, expr]
            found[expr.args[0].name_hint] = [
                (tuple(int(d) for d in a.ty.shape), str(a.ty.dtype)) for a in args
            ]

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


@pytest.mark.parametrize("algorithm", KERNELS)
def test_schedules_preserve_every_function(tiny_mod, target, algorithm):
    """Each scheduled PrimFunc computes what its unscheduled version computes, and the
    conv/dense ones really got parallel and vectorized loops."""
    plain = lower(tiny_mod, algorithm, target, schedule=False).mod
    scheduled = lower(tiny_mod, algorithm, target).mod
    types = _param_types(plain)
    rng = np.random.default_rng(0)
    plain_funcs, scheduled_funcs = _prim_funcs(plain), _prim_funcs(scheduled)
    assert plain_funcs.keys() == scheduled_funcs.keys()
    for name, func in plain_funcs.items():
        assert not func.attrs.get("tirx.is_scheduled", False)
        done = scheduled_funcs[name]
        assert done.attrs["tirx.is_scheduled"]
        text = done.script()
        if '"dlas.op": "conv2d"' in text or '"dlas.op": "depthwise"' in text:
            assert "T.parallel" in text and "T.vectorized" in text, name
        elif '"dlas.op": "dense"' in text:
            # A 10-class layer is one 16-column panel (nothing to run in parallel) and the
            # CSR dot products are scalar: one of the two at least.
            assert "T.parallel" in text or "T.vectorized" in text, name
        if "sparse" in text and "dlas.op" in text:
            continue  # CSR indices must be valid: covered by the end-to-end tests
        args = [
            rng.standard_normal(shape).astype(dtype) if dtype.startswith("float")
            else np.zeros(shape, dtype)
            for shape, dtype in types[name]
        ]  # fmt: skip
        results = []
        for f in (func, done):
            lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target)
            tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
            lib["main"](*tensors)
            results.append(tensors[-1].numpy())
        assert relative_error(results[1], results[0]) <= 1e-5, name


def test_a_schedule_that_raises_is_recorded_as_a_fallback(tiny_mod, target, monkeypatch):
    """A kernel whose algorithm schedule raises runs the generic schedule, often many times
    slower (a stale loop handle in a conv schedule once made ResNet18 45x slower): the
    lowering names each such kernel with the error, and the run logs them."""
    assert lower(tiny_mod, "spatial_pack", target).schedule_fallbacks() == {}

    def broken(self, sch, block):
        raise RuntimeError("no tile fits")

    monkeypatch.setattr(ALGORITHMS.get("spatial_pack"), "schedule", broken)
    fallbacks = lower(tiny_mod, "spatial_pack", target).schedule_fallbacks()
    assert any(name.startswith("fused_conv2d") for name in fallbacks), fallbacks
    assert all(why == "RuntimeError: no tile fits" for why in fallbacks.values()), fallbacks


def test_unscheduled_module_keeps_the_algorithm_blocks(tiny_mod, target):
    """schedule=False is what MetaSchedule tunes: the same computes, annotated, no loops bound."""
    for algorithm in ("direct", "gemm", "spatial_pack"):
        text = lower(tiny_mod, algorithm, target, schedule=False).mod.script()
        assert f'"dlas.algorithm": "{algorithm}"' in text
        assert "T.parallel" not in text and "T.vectorized" not in text


def test_default_schedules_leave_the_unscheduled_module_as_it_was(tiny_mod, target):
    """The tuner schedules one lowered module twice (its records, then the defaults alone):
    scheduling returns a new module."""
    from dlas.algorithms import schedule_defaults

    unscheduled = lower(tiny_mod, "direct", target, schedule=False).mod
    before = unscheduled.script()
    scheduled = schedule_defaults(unscheduled, target)
    assert unscheduled.script() == before
    assert "T.parallel" in scheduled.script()
