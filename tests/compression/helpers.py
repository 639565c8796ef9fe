"""Small pieces the compression tests share: a host target, compile-and-run, tiny data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from dlas.data import DataBundle, InputSpec
from dlas.devices.local_cpu import host_target  # noqa: F401 (the tests' target)


def build(mod: Any, algorithm: Any = "direct") -> Any:
    """The module lowered by the real algorithm layer (a name or an instance) and built for this
    host."""
    from dlas.algorithms import lower
    from dlas.compiler.build import build as build_lowered

    target = host_target()
    return build_lowered(lower(mod, algorithm, target).mod, target)


def run(executable: Any, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x), tvm.cpu()))
    return (out[0] if hasattr(out, "__len__") else out).numpy()


def random_data(size: int = 16, samples: int = 64, classes: int = 10, seed: int = 0) -> DataBundle:
    """Random images with labels that depend on them (so fine-tuning has a signal)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 3, size, size, generator=gen)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() * (classes - 1)
    half = samples // 2
    return DataBundle(
        InputSpec(3, size, classes),
        TensorDataset(x[:half], y[:half]),
        TensorDataset(x[half:], y[half:]),
    )
