"""PyTorch → Relax through torch.export, with the weights bound as constants."""

from __future__ import annotations

import torch
import tvm
from torch import nn

from dlas.data import InputSpec

from .torch_deprecations import torch_internal_deprecations_hidden


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
