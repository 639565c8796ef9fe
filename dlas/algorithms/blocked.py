"""Blocked: activations stay in 16-channel blocks (N[C/16]HW[16]) from one conv to the next.

``spatial_pack`` computes in this layout too, but packs each conv's NCHW input and unpacks
its output, every layer. Here the graph passes of :mod:`.blocked_layout` put the whole chain
of convs, batch norms, activations, residual adds and means in the blocked layout before
legalization, so a conv reads the previous conv's output as it was written: each pixel's 16
channels in one cache line, which the 16-lane FMA tile (one broadcast input channel x 16
output channels, spatial_pack's kernel and schedule) reads in order; 3x3 stride-1 convs
with enough outputs run Winograd F(4x4, 3x3) (``winograd``'s transforms and product) from and
to the same layout, those of 7x7 to 13x13 outputs Winograd F(2x2, 3x3). This is the layout
ONNX Runtime's NCHWc transformer keeps between its convs. The layer table's ``compute``
column says which compute each conv ran. A conv that cannot run blocked (int8 or bf16 data,
grouped, weights that are not constants) runs ``direct`` on NCHW, with a transform to and
from the blocked layout fused into the kernels beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from . import blocked_layout, winograd
from .base import Algorithm
from .constants import value_of
from .legalize import call_te
from .packing import pack_data
from .registry import ALGORITHMS
from .schedules import extent, finish_reduction, tile
from .shapes import (
    OP_KEY,
    ROWS_FIRST_KEY,
    STAGE_ATTRS,
    ConvSpec,
    accumulator_registers,
    describe_times,
    largest_divisor,
    main_attrs,
    pixel_tile,
    round_up,
    target_threads,
)
from .spatial_pack import SpatialPack
from .stages import PLANE_TASK_ROWS, compute_per_task

BLOCK = blocked_layout.BLOCK
# Parallel tasks a depthwise layer is split into at least, where its rows allow.
MIN_TASKS = 8
# Winograd's transformed weights are 4x the 3x3 filters (6x6 per filter), and at batch 1 they
# stream from memory on every call: below 14x14 outputs (ResNet50's 7-px 512-channel layers)
# that stream costs more than the multiplications save (figures: algorithms/README.md).
WINOGRAD_MIN_PIXELS = 14 * 14
# F(2x2, 3x3)'s are 16/9 of the filters for 2.25x fewer multiplications: a gain from 7x7
# outputs up; at 4x4 (VGG-16-32, ResNet18-32) the stream costs more again.
WINOGRAD_2X2_MIN_PIXELS = 7 * 7
# The input channels a conv's reduction reads, in steps of half a block (read_channels).
HALF_BLOCK = BLOCK // 2
# blocked's Winograd computes, by the side of their output tiles.
WINOGRAD_TILES = {"winograd": winograd.TILE, "winograd_2x2": winograd.SMALL_TILE}
# Times (ms) of one conv computed with each of the given kernels, from blocked input to blocked
# output (algorithm=auto's race times them on this machine: auto.time_blocked_convs).
KernelTimer = Callable[[ConvSpec, np.ndarray, list[str]], dict[str, float]]


def blocked_spec(call: relax.Call) -> ConvSpec | None:
    """The ConvSpec of a conv2d that writes blocked output (its input NCHW or blocked), the
    channels counted in full; None for any other conv2d."""
    attrs = call.attrs
    if attrs.out_layout != blocked_layout.BLOCKED or attrs.kernel_layout != "OIHW":
        return None
    shape = [int(d) for d in call.args[0].ty.shape]
    nchw = shape if len(shape) == 4 else [shape[0], shape[1] * shape[4], *shape[2:4]]
    return ConvSpec.with_data(call, nchw)


class Blocked(Algorithm):
    name = "blocked"
    dtypes = ("float32",)
    whole_graph = True

    def __init__(
        self,
        winograd_min_pixels: int | None = WINOGRAD_MIN_PIXELS,
        kernel_timer: KernelTimer | None = None,
        winograd_2x2_min_pixels: int | None = WINOGRAD_2X2_MIN_PIXELS,
    ) -> None:
        """``kernel_timer``: a conv that could run Winograd or spatial_pack's kernel runs
        whichever it times fastest (the ``candidates`` column lists their times), whatever
        its size; without one, the output sizes decide (:func:`blocked_kernel`)."""
        super().__init__()
        self.winograd_min_pixels = winograd_min_pixels
        self.winograd_2x2_min_pixels = winograd_2x2_min_pixels
        self.kernel_timer = kernel_timer
        # (data, weights, gate) of the 1x1 convs whose input gate goes into their weights.
        self.input_gates: list[tuple[relax.Expr, ...]] = []

    def graph_passes(self) -> list[tvm.transform.Pass]:
        return [*blocked_layout.graph_passes(), blocked_layout.gate_into_weights(self.input_gates)]

    def fusion_passes(self) -> list[tvm.transform.Pass]:
        return [blocked_layout.FuseLayoutTransforms()]

    def conv2d(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        spec = blocked_spec(call)
        if spec is None:
            return super().conv2d(bb, call)  # an NCHW conv: select() gives direct
        row = {**spec.row(), "algorithm": self.name, "fallback": ""}
        (data, weight), gates = call.args, self.input_gates
        gate = next((g for x, w, g in gates if x.same_as(data) and w.same_as(weight)), None)
        if gate is None:
            out = self.emit_conv2d(bb, data, value_of(weight), spec, row)
        else:
            row.update(compute="spatial_pack", input_gate="in the weights")
            out = emit_gated(bb, data, value_of(weight), gate, spec)
        self.record(row)
        return out

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        """A conv reading blocked (or, at the stem, NCHW) data and writing blocked output."""
        blocked_input = len(data.ty.shape) == 5
        kernels = kernel_options(spec, blocked_input)
        if self.kernel_timer is not None and len(kernels) > 1:
            times = self.kernel_timer(spec, weight, kernels)
            row["candidates"] = describe_times(times)
            kernel = min(times, key=times.__getitem__)
        else:
            kernel = blocked_kernel(
                spec, blocked_input, self.winograd_min_pixels, self.winograd_2x2_min_pixels
            )
        row["compute"] = kernel
        return emit_kernel(bb, data, weight, spec, kernel)

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        return ALGORITHMS.get("direct")(), "not blocked (dtype, groups or weights): direct"

    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        if str(sch.get(block).annotations[OP_KEY]) == "depthwise":
            _schedule_depthwise(sch, block)
        else:
            SpatialPack().schedule(sch, block)


def emit_kernel(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, spec: ConvSpec, kernel: str
) -> relax.Expr:
    """One blocked conv computed with ``kernel`` (a name :func:`kernel_options` gives)."""
    if kernel == "depthwise":
        packed = relax.const(SpatialPack.pack_depthwise(weight, spec))
        return call_te(bb, _depthwise, data, packed, spec=spec, name="conv2d")
    if kernel in WINOGRAD_TILES:
        packed = relax.const(winograd.Winograd.pack_weight(weight, spec, WINOGRAD_TILES[kernel]))
        return call_te(bb, _winograd, data, packed, spec=spec, name="conv2d")
    step = None
    if len(data.ty.shape) == 5:  # blocked input: its padding channels need not be read
        read = read_channels(weight)
        weight, step = weight[:, :read], BLOCK if read % BLOCK == 0 else HALF_BLOCK
    packed = relax.const(SpatialPack.pack_weight(weight, spec, step))
    written = written_channels(weight)
    return call_te(bb, partial(_conv, written=written), data, packed, spec=spec, name="conv2d")


def read_channels(weight: np.ndarray) -> int:
    """The input channels a conv reads: up to the last one with a nonzero weight, in half
    blocks. blocked_layout pads MobileNetV2's and EfficientNet-B0's 24 and 40 channels to 32
    and 48, and gives the next conv zero weights for the padding: a reduction over them spent
    a quarter of a 24 -> 144 layer's multiply-adds on nothing. Whole models, round-robin on a
    2-core AVX2 EPYC, outputs bitwise equal: MobileNetV2-32 and -224 1.02x faster (95%:
    1.02-1.03), EfficientNet-B0 1.01x (1.00-1.03)."""
    return _nonzero_extent(weight, 1, HALF_BLOCK)


def _nonzero_extent(weight: np.ndarray, axis: int, step: int) -> int:
    """The channels along ``axis`` (0: output, 1: input) up to the last one with a nonzero
    weight, in steps of ``step`` (at least one step), at most all of them."""
    others = tuple(a for a in range(weight.ndim) if a != axis)
    nonzero = np.flatnonzero(np.any(weight != 0, axis=others))
    extent = round_up(int(nonzero[-1]) + 1 if nonzero.size else 1, step)
    return min(extent, int(weight.shape[axis]))


def written_channels(weight: np.ndarray) -> int:
    """The output channels a conv computes: up to the last one with a nonzero filter, in
    parts of a vector register (:func:`.shapes.accumulator_registers`: halves of a block on
    AVX2); all of them where one register holds a block (masking part of a vector costs a
    blend per multiply-add there). PadChannels gives the filters of the channels it pads (24
    to 32, 40 to 48) zeros; their multiply-adds were a quarter and a sixth of those layers'.
    Kernels in the model, profiled round-robin on a 2-core AVX2 EPYC: 144 -> 24 and 96 -> 24
    at 56 px 1.25-1.32x faster (MobileNetV2-224, EfficientNet-B0); 240 -> 40 and 144 -> 40
    at 28 px, one vector a tile whose block loop is not unrolled, 1.01-1.02x."""
    part = BLOCK // accumulator_registers()
    return int(weight.shape[0]) if part == BLOCK else _nonzero_extent(weight, 0, part)


def emit_gated(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, gate: relax.Expr, spec: ConvSpec
) -> relax.Expr:
    """A 1x1 conv of ``data`` whose input channels ``gate`` scales, by scaling its weights."""
    packed = relax.const(SpatialPack.pack_weight(weight, spec))
    scaled = bb.emit(call_te(bb, _gated_weights, packed, gate, spec=spec, name="gated_weights"))
    conv = partial(_conv, written=written_channels(weight))
    return call_te(bb, conv, data, scaled, spec=spec, name="conv2d")


def kernel_options(spec: ConvSpec, blocked_input: bool) -> list[str]:
    """The computes a blocked conv can run: ``depthwise``; ``spatial_pack``'s, and for a 3x3
    stride-1 conv on blocked input also ``winograd`` and ``winograd_2x2``."""
    if spec.depthwise:
        return ["depthwise"]
    if blocked_input and winograd.Winograd().select(spec)[0].name == "winograd":
        return ["spatial_pack", *WINOGRAD_TILES]
    return ["spatial_pack"]


def blocked_kernel(
    spec: ConvSpec,
    blocked_input: bool,
    winograd_min_pixels: int | None,
    winograd_2x2_min_pixels: int | None,
) -> str:
    """The compute a blocked conv runs untimed, where it can: ``winograd`` from
    ``winograd_min_pixels`` outputs up, below that ``winograd_2x2`` from
    ``winograd_2x2_min_pixels`` up (None: never); else the first of its options."""
    options = kernel_options(spec, blocked_input)
    pixels = spec.out_h * spec.out_w
    for kernel, min_pixels in (
        ("winograd", winograd_min_pixels),
        ("winograd_2x2", winograd_2x2_min_pixels),
    ):
        if kernel in options and min_pixels is not None and pixels >= min_pixels:
            return kernel
    return options[0]


def conv_module(spec: ConvSpec, weight: np.ndarray, kernel: str) -> tvm.IRModule:
    """One conv from blocked input to blocked output computed with ``kernel``, as a layer
    between two others of a blocked model runs it (what a kernel timer times)."""
    bb = relax.BlockBuilder()
    shape = (spec.batch, spec.in_channels // BLOCK, spec.height, spec.width, BLOCK)
    x = relax.Var("x", relax.TensorType(shape, spec.dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(emit_kernel(bb, x, weight, spec, kernel))
        bb.emit_func_output(out)
    return bb.get()


def _schedule_depthwise(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Register tiles of a few pixels x 16 channels; a task takes about PLANE_TASK_ROWS rows of
    one channel block and pads its own input rows while they are in cache (padded in a pass
    of its own, a 112-px layer streamed its input through memory twice).

    The threads split the tasks as the 1x1 layer before split its output
    (ConvSpec.input_split_by_rows), so each core reads what it wrote: by channel blocks, or
    band of rows by band, each band's channel blocks in turn (then at least a band per
    thread where the rows allow). Split by channel blocks at every size, MobileNetV2-224 ran
    1.11x and MobileNetV2-32 1.12x slower; split by rows at every size, EfficientNet-B0 1.09x
    slower (the 1x1 layers before its 14- and 7-px ones split by channels)."""
    n, cb, y, x, ci, kh, kw = sch.get_loops(block)
    rows, cols = pixel_tile(extent(sch, y), extent(sch, x), 1)
    y_o, y_i = tile(sch, y, rows)
    x_o, x_i = tile(sch, x, cols)
    # Tasks of about PLANE_TASK_ROWS rows, fewer where that leaves the threads too few tasks
    # (a 16-channel layer is one block: its rows are all the work there is to split).
    tiles, per_task = extent(sch, y_o), max(1, PLANE_TASK_ROWS // extent(sch, y_i))
    while per_task > 1 and extent(sch, cb) * -(-tiles // per_task) < MIN_TASKS:
        per_task //= 2
    rows_first = ROWS_FIRST_KEY in sch.get(block).annotations
    if rows_first:
        per_task = min(per_task, max(1, tiles // target_threads()))
    task, y_o = tile(sch, y_o, largest_divisor(tiles, per_task))
    first, second = (task, cb) if rows_first else (cb, task)
    sch.reorder(n, first, second, y_o, x_o, kh, kw, y_i, x_i, ci)
    compute_per_task(sch, block, second, lambda stage: None)
    finish_reduction(
        sch,
        block,
        parallel=[n, first, second],
        tile_loop=x_o,
        first_reduction=kh,
        vector=ci,
        unroll=[kh, kw, y_i, x_i],
    )


def _blocked_input(
    data: te.Tensor, spec: ConvSpec, height: int = 0, width: int = 0
) -> tuple[te.Tensor, int]:
    """(zero-padded N[C/b]HW[b] input, b): an NCHW input is packed (b divides the channels),
    a blocked one only padded; at least ``height`` x ``width`` when given (whole tiles)."""
    if len(data.shape) == 4:
        block = BLOCK if spec.depthwise else largest_divisor(spec.in_per_group, BLOCK)
        return pack_data(data, spec, block, height, width), block
    top, left, bottom, right = spec.padding
    bottom = max(bottom, height - spec.height - top)
    right = max(right, width - spec.width - left)
    if not any((top, left, bottom, right)):
        return data, BLOCK
    zero = tirx.const(0, data.dtype)

    def value(n, cb, y, x, ci):
        inside = tirx.all(y >= top, y < spec.height + top, x >= left, x < spec.width + left)
        return tirx.if_then_else(inside, data[n, cb, y - top, x - left, ci], zero)

    shape = (spec.batch, spec.in_channels // BLOCK, spec.height + top + bottom)
    shape += (spec.width + left + right, BLOCK)
    return te.compute(shape, value, name="data_pack", attrs=STAGE_ATTRS), BLOCK


def _conv(data: te.Tensor, packed: te.Tensor, spec: ConvSpec, *, written: int) -> te.Tensor:
    """The conv of ``packed`` weights ([OC/16, IC/b, KH, KW, b, 16]) over the input channels
    they hold (read_channels), in blocks of b: the data's 16, or half of them. Output
    channels from ``written`` on (written_channels) are zero, their products masked out."""
    d, cbi = _blocked_input(data, spec)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    step = int(packed.shape[4])  # input channels a weight block holds: cbi, or half of it
    halves = cbi // step
    ib = te.reduce_axis((0, int(packed.shape[1])), "ib")
    kh = te.reduce_axis((0, spec.kernel_h), "kh")
    kw = te.reduce_axis((0, spec.kernel_w), "kw")
    ii = te.reduce_axis((0, step), "ii")

    def value(n, ob, y, x, oi):
        block, lane = (ib, ii) if halves == 1 else (ib // halves, ib % halves * step + ii)
        pixel = d[n, block, y * sh + kh * dh, x * sw + kw * dw, lane]
        product = pixel * packed[ob, ib, kh, kw, ii, oi]
        if padded:  # whole parts of a vector, constant once the tile is unrolled
            product = tirx.if_then_else(ob * BLOCK + oi < written, product, zero)
        return te.sum(product, axis=[ib, kh, kw, ii])

    padded, zero = written < spec.out_channels, tirx.const(0, data.dtype)
    shape = (spec.batch, spec.out_channels // BLOCK, spec.out_h, spec.out_w, BLOCK)
    attrs = main_attrs(
        Blocked.name, "conv2d", spec.macs, rows_first=spec.split_by_rows, padded_lanes=padded
    )
    return te.compute(shape, value, name="conv", attrs=attrs)


def _gated_weights(packed: te.Tensor, gate: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """Packed 1x1 weights times the gate of their input channel (blocked, [1, C/16, 1, 1, 16])."""
    cbi = int(packed.shape[4])

    def value(ob, ib, kh, kw, ii, oi):
        channel = ib * cbi + ii
        return packed[ob, ib, kh, kw, ii, oi] * gate[0, channel // BLOCK, 0, 0, channel % BLOCK]

    return te.compute(packed.shape, value, name="gated_weights")


def _winograd(data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """Winograd F(4x4, 3x3), or F(2x2, 3x3) as ``packed`` says, from blocked input to blocked
    output (winograd's transforms and product, without its pack and unpack)."""
    tile = winograd.packed_tile(packed)
    th, tw = winograd.tiles(spec, tile)
    d, _ = _blocked_input(data, spec, th * tile + 2, tw * tile + 2)
    out = winograd.output_tiles(d, packed, spec)
    return te.compute(
        (spec.batch, spec.out_channels // BLOCK, spec.out_h, spec.out_w, BLOCK),
        lambda n, ob, h, w, oi: out[n, ob, h // tile, w // tile, h % tile, w % tile, oi],
        name="untile",
    )


def _depthwise(data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
    d, _ = _blocked_input(data, spec)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    kh = te.reduce_axis((0, spec.kernel_h), "kh")
    kw = te.reduce_axis((0, spec.kernel_w), "kw")

    def value(n, cb, y, x, ci):
        pixel = d[n, cb, y * sh + kh * dh, x * sw + kw * dw, ci]
        return te.sum(pixel * packed[cb, kh, kw, ci], axis=[kh, kw])

    shape = (spec.batch, spec.out_channels // BLOCK, spec.out_h, spec.out_w, BLOCK)
    attrs = main_attrs(Blocked.name, "depthwise", spec.macs, rows_first=spec.input_split_by_rows)
    return te.compute(shape, value, name="conv", attrs=attrs)


ALGORITHMS.register(Blocked.name)(Blocked)
