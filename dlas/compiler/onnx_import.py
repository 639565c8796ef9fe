"""ONNX → Relax through TVM's ONNX frontend, weights bound as constants (like the torch path)."""

from __future__ import annotations

import tvm

from dlas.data import InputSpec


def import_onnx(path: str, spec: InputSpec) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    from dlas.models.onnx_model import graph_inputs, load_onnx

    model = load_onnx(path)
    (graph_input,) = graph_inputs(model)
    return from_onnx(
        model,
        shape_dict={graph_input.name: list(spec.shape)},
        dtype_dict={graph_input.name: "float32"},
        keep_params_in_input=False,
    )
