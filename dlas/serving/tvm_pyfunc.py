"""Loader of dlas's MLflow flavour: a TVM library built for this host, run by Relax's VM.

This file is copied into every logged model (``<model>/code/``) and imported by MLflow as the
``python_function`` loader module, so it needs only numpy and TVM (not dlas): a logged model
loads wherever the same TVM runtime is installed.

Input convention: a float32 NCHW batch, normalised as the run normalised it
(``(pixel - mean) / std`` with pixels in [0, 1]); a single CHW image is taken as a batch of one.
``params={"raw_pixels": True}`` applies that normalisation here instead. Output: float32 logits,
one row per image. The library is built for batch 1, so a batch runs image by image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SPEC_FILE = "input_spec.json"
LIBRARY_FILE = "model.so"


class TVMClassifier:
    def __init__(self, data_path: str) -> None:
        # TVM's thread pool reads this once, when it first starts; unset, it takes half the
        # CPUs (dlas's local device does the same before any run).
        os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
        import tvm
        from tvm import relax

        folder = Path(data_path)
        self.spec: dict[str, Any] = json.loads((folder / SPEC_FILE).read_text())
        self.shape = tuple(self.spec["shape"])  # (1, C, H, W): what the library was built for
        self.dtype = self.spec.get("dtype", "float32")
        self.mean = np.asarray(self.spec["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(self.spec["std"], dtype=np.float32)[:, None, None]
        self._tvm = tvm
        self._dev = tvm.cpu()
        self._vm = relax.VirtualMachine(
            tvm.runtime.load_module(str(folder / LIBRARY_FILE)), self._dev
        )

    def batch(self, model_input: Any) -> np.ndarray:
        """The input as an (N, C, H, W) float32 array, or a ValueError that says what fits."""
        x = np.asarray(model_input, dtype=np.float32)
        chw = self.shape[1:]
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(chw):
            raise ValueError(
                f"expected a float32 batch of shape (N, {', '.join(map(str, chw))}) (NCHW); "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        x = self.batch(model_input)
        if (params or {}).get("raw_pixels"):
            x = (x - self.mean) / self.std
        out = [self._run_one(np.ascontiguousarray(image[None], dtype=self.dtype)) for image in x]
        if not out:
            return np.zeros((0, self.spec["num_classes"]), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        self._vm.set_input("main", self._tvm.runtime.tensor(x, self._dev))
        self._vm.invoke_stateful("main")
        out = self._vm.get_outputs("main")
        while isinstance(out, tuple):
            out = out[0]
        return out.numpy()


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> TVMClassifier:
    return TVMClassifier(data_path)
