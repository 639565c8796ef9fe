"""Vendor baselines in the tuning group: the same model, latency protocol and accuracy path,
without TVM (so ``algorithm=`` does not apply to them; the pipeline tags and logs that)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dlas.data import InputSpec
from dlas.devices import Program
from dlas.tuning.base import TuneContext, Tuner
from dlas.tuning.registry import TUNERS

log = logging.getLogger(__name__)


def torch_function(
    module: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[np.ndarray], np.ndarray]:
    """numpy NCHW batch → numpy logits, without autograd bookkeeping."""

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return forward


class Baseline(Tuner):
    uses_tvm = False
    default_schedules = False

    def note(self) -> str:
        return f"tuning={self.cfg.name} runs outside TVM; the algorithm layer does not apply"

    @staticmethod
    def threads(ctx: TuneContext) -> int | None:
        """The device's thread count for this run (its ``threads()`` block has already given
        it to PyTorch); None: the library's own default."""
        return ctx.device.thread_count() if ctx.device is not None else None


@TUNERS.register("pytorch")
class PyTorchEager(Baseline):
    """PyTorch eager mode (oneDNN convolutions on CPU); with ``compression=int8``, PyTorch's
    own static int8 (x86 quantized engine) calibrated on the same samples."""

    peer_compressions = ("int8",)

    def wrap(self, model: nn.Module, spec: InputSpec, ctx: TuneContext) -> Program:
        ctx.metrics["baseline/threads"] = float(torch.get_num_threads())
        what = "eager"
        if is_int8(ctx):
            from dlas.tuning.int8_peers import pytorch_int8

            model = pytorch_int8(model, ctx.compression.calibration_samples)
            what = "static int8 (FX, x86 quantized engine)"
        return Program(
            function=torch_function(model.eval()),
            description=f"PyTorch {torch.__version__} {what}; {self.note()}",
        )


def is_int8(ctx: TuneContext) -> bool:
    """The run asks for int8 (the baseline then runs its own library's int8)."""
    return ctx.compression is not None and ctx.compression.cfg.name == "int8"


@TUNERS.register("torch_compile")
class TorchCompile(Baseline):
    """``torch.compile`` with Inductor (C++/OpenMP kernels on CPU, needs a C++ compiler)."""

    def wrap(self, model: nn.Module, spec: InputSpec, ctx: TuneContext) -> Program:
        import torch._inductor.config as inductor_config

        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            raise RuntimeError(
                f"tuning=torch_compile needs a C++ compiler for Inductor's CPU "
                f"kernels; {compiler!r} is not on PATH (set CXX)"
            )
        model = model.eval()
        compiled = torch.compile(model, backend="inductor", mode=self.cfg.mode, dynamic=False)
        function = torch_function(compiled)
        # Compile now, so compile/seconds holds Inductor's time and the latency samples don't;
        # freezing folds the weights into the graph (Inductor's CPU inference setting).
        with inductor_config.patch(freezing=self.cfg.freezing):
            function(np.zeros(spec.shape, dtype=np.float32))
        ctx.metrics["baseline/threads"] = float(torch.get_num_threads())
        return Program(
            function=function,
            description=(
                f"torch.compile(inductor, mode={self.cfg.mode}, freezing={self.cfg.freezing}); "
                f"{self.note()}"
            ),
        )
