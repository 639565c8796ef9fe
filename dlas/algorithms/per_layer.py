"""Per-layer: each conv2d runs the algorithm that its layer, or its shape, is mapped to.

The best algorithm changes from layer to layer as well as from model to model: 1×1
convolutions are plain matrix products, depthwise ones have nothing to pack. The mapping
goes from selectors to algorithm names, and unmatched layers run ``default``:

    python -m dlas.run algorithm=per_layer algorithm.default=spatial_pack \\
        '+algorithm.layers={k3s1: winograd, depthwise: direct, 0: gemm}'

Selectors, tried in this order:
- a layer index: the ``layer`` column of a run's ``algorithm/layers.json`` table;
- ``depthwise`` or ``grouped``;
- a kernel and stride, ``k3s2`` (``k1x7s1`` for non-square kernels, ``s2x1`` for unequal
  strides);
- a kernel alone, ``k3``.
A chosen algorithm keeps its own fallbacks (spatial_pack runs depthwise layers with direct),
and the table says so as usual. Dense (linear) layers always take the GEMM path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import Algorithm, layer_kernels
from .registry import ALGORITHMS
from .shapes import ConvSpec

SELECTOR = re.compile(r"^(\d+|depthwise|grouped|k\d+(x\d+)?(s\d+(x\d+)?)?)$")


def _pair(prefix: str, first: int, second: int) -> str:
    return f"{prefix}{first}" if first == second else f"{prefix}{first}x{second}"


def selectors(spec: ConvSpec, index: int) -> list[str]:
    """The keys that can select this layer, most specific first."""
    kernel = _pair("k", spec.kernel_h, spec.kernel_w)
    keys = [str(index)]
    if spec.depthwise:
        keys.append("depthwise")
    elif spec.groups > 1:
        keys.append("grouped")
    return [*keys, kernel + _pair("s", *spec.strides), kernel]


@ALGORITHMS.register("per_layer")
class PerLayer(Algorithm):
    name = "per_layer"
    composite = True

    def __init__(self, default: str = "direct", layers: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.default = default
        self.mapping = {str(k): v for k, v in (layers or {}).items()}
        bad = [k for k in self.mapping if not SELECTOR.match(k)]
        if bad:
            raise ValueError(
                f"algorithm.layers: {', '.join(map(repr, bad))} is not a selector; use a layer "
                "index, depthwise, grouped, k<kernel>s<stride> or k<kernel> (e.g. k3s1, k1)"
            )
        kernels = layer_kernels()
        for name in self.algorithms():
            if name not in kernels:
                raise ValueError(
                    f"algorithm=per_layer cannot map a layer to {name!r}; "
                    f"available: {', '.join(kernels)}"
                )

    def algorithms(self) -> list[str]:
        return list(dict.fromkeys([self.default, *self.mapping.values()]))

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        # The row for this conv is the next one recorded: its index is the table's length.
        keys = selectors(spec, len(self.layers))
        chosen = next((self.mapping[k] for k in keys if k in self.mapping), self.default)
        return ALGORITHMS.get(chosen)().select(spec)
