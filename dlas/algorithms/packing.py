"""Channel-blocked data layouts shared by the kernels: NCHW ↔ N[C/b]HW[b] (zero padding
folded into the packing pass), and the dot-product kernels' weight blocks (numpy, compile
time; see dot_product.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import s_tir, te, tirx

from .schedules import extent
from .shapes import LANES, STAGE_ATTRS, ConvSpec, largest_divisor, round_up

# A pack that interleaves a few channel planes into one row of pixel groups (NCHW[4]c, the
# stem's NCHW[3]c): its pixel loop is left to LLVM's vectorizer (schedule_interleave, called
# by dot_rows.schedule; schedule_interleaving_packs, by spatial_pack's).
INTERLEAVE_KEY = "dlas.interleave"
INTERLEAVE_ATTRS = {**STAGE_ATTRS, INTERLEAVE_KEY: 1}


def channel_blocks(spec: ConvSpec) -> tuple[int, int, int]:
    """(input block, output block, padded output channels): blocks never straddle groups."""
    cbi = largest_divisor(spec.in_per_group, LANES)
    if spec.groups == 1:
        return cbi, LANES, round_up(spec.out_channels, LANES)
    return cbi, largest_divisor(spec.out_per_group, LANES), spec.out_channels


def pack_data(
    data: te.Tensor,
    spec: ConvSpec,
    block: int,
    height: int = 0,
    width: int = 0,
    element: Callable[[tirx.PrimExpr], tirx.PrimExpr] | None = None,
    pad: tirx.PrimExpr | None = None,
    attrs: dict | None = None,
) -> te.Tensor:
    """NCHW -> N[C/block]HW[block], zero padding included (one pass over the input); at
    least ``height`` x ``width`` when given (whole tiles). ``element`` stores a value the
    way a kernel reads it, ``pad`` is what padding becomes (the dot-product kernels')."""
    top, left, bottom, right = spec.padding
    h, w = spec.height, spec.width
    bottom, right = max(bottom, height - h - top), max(right, width - w - left)
    pad = tirx.const(0, data.dtype) if pad is None else pad

    def value(n, cb, y, x, ci):
        c = cb * block + ci
        inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left, c < spec.in_channels)
        pixel = data[n, c, y - top, x - left]
        return tirx.if_then_else(inside, element(pixel) if element else pixel, pad)

    shape = (spec.batch, -(-spec.in_channels // block), h + top + bottom, w + left + right, block)
    if attrs is None:
        # Vectorized over its few channels, each group of a row was a gather.
        interleaves = block < LANES and shape[3] >= LANES
        attrs = INTERLEAVE_ATTRS if interleaves else STAGE_ATTRS
    return te.compute(shape, value, name="data_pack", attrs=attrs)


def schedule_interleave(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """The group loop unrolled, the pixel loop serial for LLVM, which turns the group's reads
    into whole-row loads and shuffles; vectorized in TIR, each 4-byte group was a gather (a
    ``vpinsrb`` per byte; MobileNetV2-32 int8, direct, ran 1.07-1.13x faster without it)."""
    *outer, _, group = sch.get_loops(block)
    sch.unroll(group)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if extent(sch, fused) > 1:
        sch.parallel(fused)


def schedule_interleaving_packs(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Schedules the interleaving packs that ``block``, a conv already scheduled with its parallel
    tasks as its first loop, reads. Where the tasks split rows only, each task packs the rows it
    reads, in cache: the stem of MobileNetV2-224 ran 1.52x and EfficientNet-B0's 1.36x faster in
    the model (a pass of their own, 1.25x). Where they split output channels too, a task's rows
    would be packed once per channel tile (ResNet18-224 0.97x): a pass of their own, 1.02x."""
    packs = [p for p in sch.get_producers(block) if INTERLEAVE_KEY in sch.get(p).annotations]
    if not packs:
        return
    loops = sch.get_loops(block)
    tasks = sch.get(loops[0]).loop_var
    # The block's bindings (n, output channel block, y, x, ...) under its innermost loop.
    channel_block = sch.get(loops[-1]).body.iter_values[1]
    rows_only = not any(v.same_as(tasks) for v in tirx.analysis.undefined_vars(channel_block, []))
    for pack in packs:
        if rows_only:
            sch.compute_at(pack, loops[0], preserve_unit_loops=True)
            sch.unroll(sch.get_loops(pack)[-1])
        else:
            schedule_interleave(sch, pack)


def unpack(packed: te.Tensor, spec: ConvSpec, block: int) -> te.Tensor:
    shape = (spec.batch, spec.out_channels, spec.out_h, spec.out_w)
    return te.compute(
        shape, lambda n, c, y, x: packed[n, c // block, y, x, c % block], name="unpack"
    )


def in_block(in_channels: int, limit: int, depth: int) -> tuple[int, int]:
    """(padded input channels, channels per packed block): blocks are multiples of depth."""
    padded = round_up(in_channels, depth)
    return padded, depth * largest_divisor(padded // depth, max(1, limit // depth))


def pack_conv_weight(weight: np.ndarray, cbi: int, depth: int) -> np.ndarray:
    """OIHW -> [OC/16, ICp/cbi, KH, KW, cbi/depth, 16, depth], zeros past OC and IC."""
    oc, ic, kh, kw = weight.shape
    icp = round_up(ic, depth)
    w = np.pad(weight, [(0, round_up(oc, LANES) - oc), (0, icp - ic), (0, 0), (0, 0)])
    w = w.reshape(-1, LANES, icp // cbi, cbi // depth, depth, kh, kw)
    return np.ascontiguousarray(w.transpose(0, 2, 5, 6, 3, 1, 4))


def whole_channel_rows(w: np.ndarray, depth: int) -> np.ndarray:
    """OIHW weights as [OC, K] rows whose K is a whole number of channels' taps and of
    ``depth``: zero channels added where channels x taps is not a multiple of ``depth`` (the
    3-channel 7x7 stem: K 147 -> 196, not 148), so that im2col's K splits into (channel, tap)
    and stages.schedule_im2col_rows applies: int8 ``gemm``'s stem at 224 px ran 4.94 ms with
    K padded to 148, 0.89 ms so (a third more multiplications, a fifth of the time)."""
    taps = w.shape[2] * w.shape[3]
    channels = next(c for c in range(w.shape[1], w.shape[1] + depth + 1) if c * taps % depth == 0)
    w = np.pad(w, [(0, 0), (0, channels - w.shape[1]), (0, 0), (0, 0)])
    return w.reshape(w.shape[0], -1)


def pack_gemm_weight(weight: np.ndarray, depth: int) -> np.ndarray:
    """[OC, K] -> [OC/16, Kp/depth, 16, depth]."""
    oc, k = weight.shape
    w = np.pad(weight, [(0, round_up(oc, LANES) - oc), (0, round_up(k, depth) - k)])
    w = w.reshape(-1, LANES, w.shape[1] // depth, depth)
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3))
