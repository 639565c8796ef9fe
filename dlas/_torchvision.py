"""Import torchvision on CPU-only torch builds whose torchvision C++ ops cannot load.

torchvision 0.28's wheel carries CUDA-linked ops; on the CPU torch 2.13 wheel its extension
fails to load and ``import torchvision`` then dies registering fake kernels for
``torchvision::nms``. Defining the two operator schemas first lets every model definition
import. Where the extension loads (a normal CUDA install) nothing is touched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: the definitions die with it


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    for lib in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            return True
        except OSError:
            return False
    return False


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_importable() -> None:
    """Make ``import torchvision`` work; call before the first import of it."""
    global _library
    if _library is not None or _extension_loads():
        return
    missing = {n: s for n, s in _SCHEMAS.items() if not _op_defined(n)}
    if missing:
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing.values():
            _library.define(schema)


ensure_importable()
