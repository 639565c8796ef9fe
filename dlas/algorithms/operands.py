"""How a dot-product kernel stores its activations (:mod:`.dot_product`, :mod:`.amx`,
:mod:`.amx_direct`): the packed dtype, the +-128 shift into the instruction's signedness
and its exact correction, and 7-bit weights where the instruction needs them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx

from .shapes import LANES, round_up

SHIFT = 128  # int8 <-> uint8


@dataclass(frozen=True)
class Operands:
    """The packed data's dtype, the shift that takes the activations there (see
    :mod:`.dot_product`), and how many bits the weights are rounded down by (sums shifted back)."""

    storage: str
    shift: int
    weight_shift: int

    def element(self, value: tirx.PrimExpr) -> tirx.PrimExpr:
        """A data element as the kernel stores it."""
        if self.storage == "uint16":  # bf16 as its bit pattern
            return tirx.reinterpret("uint16", value)
        return (value.astype("int32") + self.shift).astype(self.storage) if self.shift else value

    def pad(self) -> tirx.PrimExpr:
        """What a padded zero becomes."""
        return tirx.const(self.shift, self.storage)

    def weights(self, weight: np.ndarray) -> np.ndarray:
        """The weights the kernel multiplies by (before its sums are shifted back)."""
        if self.storage == "uint16":
            return weight.view(np.uint16)
        if self.weight_shift:
            weight = np.round(weight.astype(np.float64) / (1 << self.weight_shift))
        return weight.astype(np.int8)

    def correction(self, weight: np.ndarray) -> np.ndarray:
        """What the shift adds to each output channel's sum (the kernel's weights)."""
        oc = weight.shape[0]
        sums = weight.reshape(oc, -1).astype(np.int64).sum(axis=1) * self.shift
        return np.pad(sums, (0, round_up(oc, LANES) - oc)).astype(np.int32)

    def result(self, acc: tirx.PrimExpr, corr: tirx.PrimExpr) -> tirx.PrimExpr:
        """A lane of the accumulator as the layer's output."""
        if self.storage == "uint16":
            return acc
        return (acc - corr) * (1 << self.weight_shift)  # x 1 folds away
