"""Exporting a model (to Relax for TVM, to ONNX for ONNX Runtime) shows the user no warning
about torch's own code."""

from __future__ import annotations

import warnings

import pytest

from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.models import create_model


@pytest.mark.parametrize("to", ["relax", "onnx"])
def test_exporting_warns_nothing_about_torchs_own_code(to, tmp_path):
    model, spec = create_model("tiny_cnn", 10, image_size=16), InputSpec(3, 16, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if to == "relax":
            export(model, spec)
        else:
            pytest.importorskip("onnx")
            from dlas.tuning.onnx_runtime import export_onnx

            export_onnx(model, spec, tmp_path / "model.onnx", opset=18)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
