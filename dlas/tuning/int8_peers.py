"""The peers' own int8: PyTorch's x86 quantized engine and ONNX Runtime's static QDQ.

Both are static post-training quantizations calibrated on the same samples as dlas's
``compression=int8`` (u8 activations per tensor, s8 weights per output channel), so
``tuning=pytorch|onnxruntime compression=int8`` compares int8 implementations, not recipes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def pytorch_int8(model: nn.Module, samples: list[torch.Tensor]) -> nn.Module:
    """FX graph-mode static quantization for the x86 engine (oneDNN/FBGEMM int8 kernels)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    model = model.eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (samples[0][:1],))
    with torch.inference_mode():
        for x in samples:
            prepared(x)
    return convert_fx(prepared).eval()


def onnxruntime_int8(
    float_path: Path,
    samples: list[torch.Tensor],
    folder: Path,
    threads: int | None,
) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """``quantize_static`` (QDQ, u8 activations, s8 per-channel weights) of the float ONNX
    graph at ``float_path`` (intermediate files go to ``folder``); returns the forward function
    and the session."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{"input": x[i : i + 1].numpy()} for x in samples for i in range(len(x))]
            )

        def get_next(self) -> dict | None:
            return next(self.items, None)

    pre_path, q_path = folder / "pre.onnx", folder / "int8.onnx"
    quant_pre_process(str(float_path), str(pre_path))
    quantize_static(
        str(pre_path),
        str(q_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(q_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return forward, session
