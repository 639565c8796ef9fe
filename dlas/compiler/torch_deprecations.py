"""Warnings torch raises about its own code while exporting a model, hidden from runs."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

TORCH_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


@contextlib.contextmanager
def torch_internal_deprecations_hidden() -> Iterator[None]:
    """Hide the FutureWarning torch 2.13's decompositions (run by TVM's importer and by
    torch.onnx.export) raise on every model: they deep-copy torch's own call graph, and with
    it a pytree class torch deprecated. It is about torch's code, not the user's model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", TORCH_LEAFSPEC_WARNING, FutureWarning)
        yield
