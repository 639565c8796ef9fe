"""The dense baseline a compressed run is compared with, without retraining or recompiling.

Dense runs record their compiled top-1 under a key of (trained checkpoint, test samples);
compressed runs of the same checkpoint read it and log ``accuracy/drop_vs_dense`` in points.
Until a dense run has been compiled and measured, the reference is the dense PyTorch model's
top-1 on the same test samples (evaluated once, then cached too); the
``accuracy.dense_reference`` tag says which one a run used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dlas.cache import Cache, write_atomic
from dlas.data import DataBundle
from dlas.metrics import DENSE_TOP1, DROP, PYTORCH_DROP, PYTORCH_TOP1, TOP1, accuracy_drop

RESULTS_VERSION = 1


@dataclass
class DenseReference:
    path: Path | None
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, cache: Cache, checkpoint_spec: dict, test_limit: int | None) -> DenseReference:
        if not checkpoint_spec:
            return cls(None)
        spec = {
            "results_version": RESULTS_VERSION,
            "kind": "dense_accuracy",
            "checkpoint": checkpoint_spec,
            "test_limit": test_limit,
        }
        path = cache.entry("results", spec, ".json")
        facts = json.loads(path.read_text()) if path.exists() else {"spec": spec}
        return cls(path, facts)

    def ensure_pytorch(
        self, dense_model: nn.Module, data: DataBundle, test_limit: int | None
    ) -> None:
        """Evaluate the dense model (before compression) unless a reference is cached."""
        from dlas.models import evaluate

        if self.path is None or not data.labelled or "pytorch_top1" in self.facts:
            return
        self.facts["pytorch_top1"] = evaluate(dense_model, data, test_limit)["top1"]
        self._save()

    def record_dense(self, metrics: dict[str, float], made_by: dict[str, Any]) -> None:
        """A dense run's compiled accuracy becomes the reference of later compressed runs."""
        if self.path is None or TOP1 not in metrics:
            return
        self.facts["compiled_top1"] = metrics[TOP1]
        self.facts["compiled_by"] = made_by
        if PYTORCH_TOP1 in metrics:
            self.facts["pytorch_top1"] = metrics[PYTORCH_TOP1]
        self._save()

    def drops(self, metrics: dict[str, float]) -> tuple[dict[str, float], str | None]:
        """Drop metrics (points) of a compressed run, and which reference they used."""
        out: dict[str, float] = {}
        pytorch = self.facts.get("pytorch_top1")
        if pytorch is not None and PYTORCH_TOP1 in metrics:
            out[PYTORCH_DROP] = accuracy_drop(pytorch, metrics[PYTORCH_TOP1])
        kind, dense = ("compiled", self.facts.get("compiled_top1"))
        if dense is None:
            kind, dense = ("pytorch", pytorch)
        if dense is None or TOP1 not in metrics:
            return out, None
        out[DENSE_TOP1] = dense
        out[DROP] = accuracy_drop(dense, metrics[TOP1])
        return out, kind

    def _save(self) -> None:
        assert self.path is not None
        write_atomic(self.path, json.dumps(self.facts, indent=2, default=str).encode())
