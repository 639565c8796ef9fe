"""PyTorch → Relax through torch.export, with the weights bound as constants."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import tvm
from torch import nn

from dlas.data import InputSpec

TORCH_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def export(model: nn.Module, spec: InputSpec) -> tvm.IRModule:
    if getattr(model, "onnx_path", None):  # model=onnx: TVM imports the file itself
        from dlas.compiler.onnx_import import import_onnx

        return import_onnx(model.onnx_path, spec)
    from tvm.relax.frontend.torch import from_exported_program

    example = torch.zeros(spec.shape)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,))
    with torch_internal_deprecations_hidden():  # TVM's importer runs the decompositions
        return from_exported_program(program, keep_params_as_input=False)


@contextlib.contextmanager
def torch_internal_deprecations_hidden() -> Iterator[None]:
    """Hide the FutureWarning torch 2.13's decompositions (run by TVM's importer and by
    torch.onnx.export) raise on every model: they deep-copy torch's own call graph, and with
    it a pytree class torch deprecated. It is about torch's code, not the user's model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", TORCH_LEAFSPEC_WARNING, FutureWarning)
        yield
