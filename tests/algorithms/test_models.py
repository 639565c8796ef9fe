"""Whole study models lowered with each algorithm compute PyTorch's logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import ALGORITHMS, lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.models import create_model
from tests.algorithms.util import (
    KERNELS,
    RTOL,
    host_target,
    relative_error,
    varying_references,
)
from tests.conftest import STUDY_MODELS, calibrate_batchnorm

DENSE = [n for n in KERNELS if not ALGORITHMS.get(n).sparse]
SPARSE = [n for n in KERNELS if ALGORITHMS.get(n).sparse]


@dataclass
class Prepared:
    mod: tvm.IRModule
    inputs: list[np.ndarray]
    refs: list[np.ndarray]


def prune_convs(model: torch.nn.Module, amount: float) -> None:
    """Zero the smallest-magnitude ``amount`` of every conv's weights (per layer)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                w = module.weight
                cut = w.abs().flatten().kthvalue(max(1, int(amount * w.numel()))).values
                w.mul_((w.abs() > cut).float())


def prepare(name: str, variant: str, size: int, prune: float = 0.0) -> Prepared:
    torch.manual_seed(0)
    spec = InputSpec(3, size, 10)
    model = create_model(name, 10, variant=variant, image_size=size)
    if prune:
        prune_convs(model, prune)
    calibrate_batchnorm(model, spec.shape)
    inputs, refs = varying_references(model, spec.shape)
    return Prepared(export(model, spec), inputs, refs)


def check(prepared: Prepared, algorithm: str) -> list[dict]:
    target = host_target()
    lowered = lower(prepared.mod, algorithm, target)
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    for x, ref in zip(prepared.inputs, prepared.refs, strict=True):
        out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))[0].numpy()
        err = relative_error(out, ref)
        assert err <= RTOL, f"{algorithm}: relative error {err:.2e}"
    return lowered.layers


@pytest.fixture(scope="module")
def resnet18():
    return prepare("resnet18", "cifar", 32)


@pytest.fixture(scope="module")
def pruned_resnet18():
    return prepare("resnet18", "cifar", 32, prune=0.8)


# Winograd's unrolled transforms take half a minute to build: its whole-model check is slow
# (test_conv covers its kernels and fallbacks in the default suite).
@pytest.mark.parametrize(
    "algorithm", [pytest.param(a, marks=pytest.mark.slow) if a == "winograd" else a for a in DENSE]
)
def test_resnet18(resnet18, algorithm):
    layers = check(resnet18, algorithm)
    assert sum(row["op"] == "conv2d" for row in layers) == 20
    assert [row["op"] for row in layers][-1] == "dense"
    # Every conv ran the algorithm, or says why not (winograd: 1x1 and strided layers).
    convs = [row for row in layers if row["op"] == "conv2d"]
    assert {row["algorithm"] for row in convs if not row["fallback"]} == {algorithm}
    assert all(row["algorithm"] == algorithm or row["fallback"] for row in convs)


@pytest.mark.parametrize("algorithm", SPARSE)
def test_pruned_resnet18(pruned_resnet18, algorithm):
    layers = check(pruned_resnet18, algorithm)
    convs = [row for row in layers if row["op"] == "conv2d"]
    assert {row["algorithm"] for row in convs} == {algorithm}
    assert all(0.75 <= row["sparsity"] <= 0.85 for row in convs)


# With ResNet18-CIFAR above: every dense algorithm on each of the study's seven models.
SLOW_MODELS = [m for m in STUDY_MODELS if m != ("resnet18", "cifar", 32)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "variant", "size"), SLOW_MODELS, ids=[f"{n}-{v}" for n, v, _ in SLOW_MODELS]
)
def test_study_models_every_dense_algorithm(name, variant, size):
    prepared = prepare(name, variant, size)
    for algorithm in DENSE:
        check(prepared, algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg16"])
def test_pruned_study_models_every_sparse_algorithm(name):
    prepared = prepare(name, "cifar", 32, prune=0.8)
    for algorithm in SPARSE:
        check(prepared, algorithm)
