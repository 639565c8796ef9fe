"""``tuning=onnxruntime``: the model exported to ONNX and run by ONNX Runtime's CPU provider."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlas.compiler.torch_deprecations import torch_internal_deprecations_hidden
from dlas.data import InputSpec
from dlas.devices import Program
from dlas.tuning.base import TuneContext
from dlas.tuning.baselines import Baseline, is_int8
from dlas.tuning.registry import TUNERS

INSTALL_HINT = "pip install dlas[onnx]"
# What a run times ONNX Runtime with, and what its logged MLflow model is served with.
PROVIDERS = ["CPUExecutionProvider"]
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def require_onnxruntime() -> Any:
    """The onnxruntime module, or an error that says how to get it (an optional extra)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"tuning=onnxruntime needs the optional ONNX dependencies ({err.name} is missing): "
            f"{INSTALL_HINT}"
        ) from err
    return onnxruntime


def graph_optimization_level(ort: Any, name: str) -> Any:
    """ONNX Runtime's GraphOptimizationLevel for ``tuning.graph_optimization``."""
    return getattr(ort.GraphOptimizationLevel, _LEVELS[name])


def serving_options(cfg: Any) -> dict[str, Any]:
    """``mlflow.onnx.log_model``'s arguments that serve the graph as a run with tuning ``cfg``
    times it: ONNX Runtime's CPU provider (MLflow's default asks for CUDA first, and warns
    where there is none) and the run's graph optimizations."""
    level = graph_optimization_level(require_onnxruntime(), cfg.graph_optimization)
    return {
        "onnx_execution_providers": PROVIDERS,
        "onnx_session_options": {"graph_optimization_level": int(level)},
    }


def export_onnx(model: nn.Module, spec: InputSpec, path: Path, opset: int) -> None:
    example = torch.zeros(spec.shape)
    with torch.no_grad(), torch_internal_deprecations_hidden():
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            external_data=False,
            verbose=False,  # no "[torch.onnx] ..." progress lines in the run's log
        )


def onnx_file(model: nn.Module, spec: InputSpec, folder: Path, opset: int) -> Path:
    """The ONNX graph of ``model``: the user's own file for ``model=onnx`` (the very file TVM
    imported), else ``model`` exported into ``folder``."""
    own = getattr(model, "onnx_path", None)
    if own:
        return Path(own)
    path = folder / "model.onnx"
    export_onnx(model, spec, path, opset)
    return path


@TUNERS.register("onnxruntime")
class OnnxRuntime(Baseline):
    peer_compressions = ("int8",)

    def wrap(self, model: nn.Module, spec: InputSpec, ctx: TuneContext) -> Program:
        ort = require_onnxruntime()
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="onnx-", dir=ctx.work_dir))
        try:
            path = onnx_file(model, spec, folder, self.cfg.opset)
            if is_int8(ctx):
                from dlas.tuning.int8_peers import onnxruntime_int8

                samples = ctx.compression.calibration_samples
                forward, _ = onnxruntime_int8(path, samples, folder, self.threads(ctx))
                return Program(
                    function=forward,
                    description=f"ONNX Runtime {ort.__version__} static QDQ int8; {self.note()}",
                )
            options = ort.SessionOptions()
            options.graph_optimization_level = graph_optimization_level(
                ort, self.cfg.graph_optimization
            )
            if (threads := self.threads(ctx)) is not None:
                options.intra_op_num_threads = threads
            # The session keeps the model in memory; the file is not needed afterwards.
            session = ort.InferenceSession(str(path), options, providers=PROVIDERS)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        input_name = session.get_inputs()[0].name

        def forward(x: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return Program(
            function=forward,
            description=(
                f"ONNX Runtime {ort.__version__} (CPU, opset {self.cfg.opset}, "
                f"{self.cfg.graph_optimization} graph optimizations); {self.note()}"
            ),
        )
