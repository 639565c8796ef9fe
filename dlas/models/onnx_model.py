"""``model=onnx model.path=model.onnx``: an ONNX graph in the same pipeline.

TVM imports the file itself (``tvm.relax.frontend.onnx.from_onnx``, see
:func:`dlas.compiler.export.export`); the rest of the stack sees an :class:`OnnxModule`, whose
forward runs ONNX Runtime on the same file: it is the reference for the "PyTorch" accuracy,
the logit comparison and the eager latency of such a run. Training and PyTorch-side
compressions do not apply (validity rules refuse the latter up front).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlas.models.registry import MODELS


class OnnxModelError(ValueError):
    """The ONNX file cannot be used: unreadable, wrong input shape, unconvertible operator."""


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Any:
    import onnx

    try:
        return onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not an ONNX model"
        raise OnnxModelError(f"model.path={path!r}: not a readable ONNX model ({exc})") from exc


def load_onnx(path: str | Path) -> Any:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise OnnxModelError(f"model.path={str(path)!r}: no such file (expected an .onnx model)")
    return _load(str(path), path.stat().st_mtime)


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def _dims(value_info: Any) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value_info.type.tensor_type.shape.dim
    ]


def graph_inputs(model: Any) -> list[Any]:
    """Real inputs (older exporters also list the initializers as inputs)."""
    weights = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def check_onnx(path: str, image_size: int, num_classes: int) -> None:
    """Refuse a file that cannot run on this data set, naming what was expected."""
    model = load_onnx(path)
    inputs = graph_inputs(model)
    want = [1, 3, image_size, image_size]
    if len(inputs) != 1:
        raise OnnxModelError(
            f"model.path={path!r} has {len(inputs)} inputs; expected one image batch {want}"
        )
    got = _dims(inputs[0])
    if len(got) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got, want, strict=False)):
        raise OnnxModelError(
            f"model.path={path!r}: input {inputs[0].name!r} has shape {got}; the data set "
            f"feeds {want} (NCHW at dataset.image_size={image_size})"
        )
    out = _dims(model.graph.output[0]) if model.graph.output else []
    if out and isinstance(out[-1], int) and out[-1] != num_classes:
        raise OnnxModelError(
            f"model.path={path!r}: output has {out[-1]} classes; the data set has "
            f"{num_classes} (dataset.num_classes)"
        )
    unsupported = unconvertible_operators(model)
    if unsupported:
        raise OnnxModelError(
            f"model.path={path!r}: TVM's ONNX frontend cannot convert operator(s) "
            f"{', '.join(unsupported)}; replace them in the exported graph"
        )


def unconvertible_operators(model: Any) -> list[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    return sorted({n.op_type for n in model.graph.node if n.op_type not in known})


class OnnxModule(nn.Module):
    """An ONNX file as a module: ONNX Runtime computes forward; the initializers are
    parameters (so sizes and parameter counts are the graph's own)."""

    trainable = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from onnx import numpy_helper

        self.onnx_path = str(Path(path).expanduser().resolve())
        graph = load_onnx(self.onnx_path).graph
        self.weights = nn.ParameterList(
            nn.Parameter(torch.from_numpy(numpy_helper.to_array(init).copy()), requires_grad=False)
            for init in graph.initializer
            if init.data_type == 1  # float32
        )
        self._session = None

    def session(self) -> Any:
        if self._session is None:
            from dlas.tuning.onnx_runtime import require_onnxruntime

            ort = require_onnxruntime()
            self._session = ort.InferenceSession(self.onnx_path, providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session()
        name = session.get_inputs()[0].name
        batch = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        # The graph may be fixed to batch 1: run larger batches image by image.
        out = [session.run(None, {name: batch[i : i + 1]})[0] for i in range(len(batch))]
        return torch.from_numpy(np.concatenate(out))

    def macs(self, input_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates of Conv and Gemm/MatMul nodes, from ONNX shape inference."""
        import onnx

        model = onnx.shape_inference.infer_shapes(load_onnx(self.onnx_path))
        shapes = {
            v.name: _dims(v)
            for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
        }
        shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
        total = 0
        for node in model.graph.node:
            if node.op_type == "Conv" and len(node.input) > 1:
                out, w = shapes.get(node.output[0], []), shapes.get(node.input[1], [])
                if out and w and all(isinstance(d, int) for d in out + w):
                    total += int(np.prod(out)) * int(np.prod(w[1:]))
            elif node.op_type in ("Gemm", "MatMul"):
                out, a = shapes.get(node.output[0], []), shapes.get(node.input[0], [])
                if out and a and all(isinstance(d, int) for d in out + a):
                    total += int(np.prod(out)) * int(a[-1])
        return total


@MODELS.register("onnx")
def _registered(num_classes: int, variant: str) -> nn.Module:
    """model=onnx builds the ONNX file named by model.path: its config, not a name, says what to build
    (dlas.models.sources.build_model); the registry entry makes the option a known one."""
    raise ValueError(
        "model=onnx is built from its config (model.path); use "
        "dlas.models.build_model(model_cfg, num_classes, image_size)"
    )
