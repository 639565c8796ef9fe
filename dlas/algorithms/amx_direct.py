"""Wide convolutions on AMX tiles with the weights as the A operand: no transposes.

:mod:`.amx` multiplies patches (pixels x K) by weights, so its input is packed to NHWC and
its 16-pixel x 16-channel accumulator tiles are transposed back into NCHW planes: with
8-bit data those byte and dword transposes took most of a layer's time (perf on a 64 -> 64
3x3 layer at 224 px: about a quarter in ``tdpbusd``, the rest packing and unpacking). Here
the product is turned around, ``C[16 channels x P pixels] += W[16 channels x K] . D[K x P]``:

* the accumulator tile's rows are output channels and its columns a run of pixels, which is
  exactly an NCHW plane's row: the epilogue reads it with unit stride;
* ``D`` is the input with ``depth`` (4 bytes, 2 bfloat16) consecutive channels interleaved
  per pixel, ``[N, Hp, C/64, 16, stride, Wq, depth]`` (16 channel quads/pairs per tile, the
  columns split into ``stride`` phases so that a strided conv's pixels are contiguous too):
  a B tile (16 quads x P pixels) is read straight from it, one tap at a time, and the pack
  is a 4-way interleave that LLVM vectorizes;
* the weights are packed once to 1 KiB A tiles ``[OC/16, taps x C/64, 16, 16, depth]``.

K is walked tap by tap (``ky``, ``kx`` as phase x column step) and channel tile by channel
tile inside a small LLVM function that TVM imports and inlines (:mod:`.amx_kernel`); it
computes a pair of channel blocks times a pair of pixel runs per A and B load (four
accumulators) for a whole output row. Layers with fewer channels than a tile row (an RGB
stem), or dilated ones, keep :mod:`.amx`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from dlas._tvmscript import cheap_frame_info

from . import intrinsics
from .amx import KINDS_BY_KEY, LANES, MAX_ROWS, Kind
from .amx_kernel import direct_llvm_ir
from .schedules import attach_epilogue, extent
from .shapes import STAGE_ATTRS, ConvSpec, largest_divisor, round_up

PREFIX = "dlas_amxd_"
TAPS_KEY = "dlas.amx_taps"  # the conv block's K structure (Taps.key), for its schedule
# K chunk and B working set of a call's loops (amx_kernel.direct_llvm_ir): within the run-to-run
# spread of single layers from 6 to 64 steps and 24 KiB to unlimited; 12 was best on 512 x 7 x 7.
CHUNK_STEPS = 12
B_BYTES = 24 * 1024
QUADS = 16  # channel groups (of ``depth``) per tile: a B tile's rows, an A tile's row


def applies(spec: ConvSpec, kind: Kind) -> bool:
    """Wide enough for a whole tile row of channels, undilated and ungrouped."""
    return spec.in_channels >= kind.per_row and spec.dilation == (1, 1) and spec.groups == 1


@dataclass(frozen=True)
class Taps:
    """K = taps x channel tiles, walked ``(ky, kxq, kxp, qt)`` with ``kx = kxq * sw + kxp``
    (a strided conv's columns are phases: ``kxp`` picks one, ``kxq`` steps a column in it;
    taps past the kernel's width have zero weights)."""

    kh: int
    kxq: int
    kxp: int
    qt: int

    @classmethod
    def of(cls, spec: ConvSpec, kind: Kind) -> Taps:
        sw, kw = spec.strides[1], spec.kernel_w
        cp = round_up(spec.in_channels, kind.per_row)
        return cls(spec.kernel_h, -(-kw // sw), min(sw, kw), cp // kind.per_row)

    @property
    def steps(self) -> int:
        return self.kh * self.kxq * self.kxp * self.qt

    def split(self, t: Any) -> tuple[Any, Any, Any, Any]:
        """(ky, kxq, kxp, qt) of K step ``t``."""
        return (
            t // (self.qt * self.kxp * self.kxq),
            t // (self.qt * self.kxp) % self.kxq,
            t // self.qt % self.kxp,
            t % self.qt,
        )

    @property
    def key(self) -> str:
        return f"{self.kh}x{self.kxq}x{self.kxp}x{self.qt}"


@dataclass(frozen=True)
class Plan:
    """How one output row is walked (:func:`.amx_kernel.direct_llvm_ir`): ``tiles`` pixel
    tiles of ``run`` pixels, K in chunks of ``chunk`` steps, the tile pairs in segments of
    ``segment``."""

    run: int
    tiles: int
    taps: Taps
    chunk: int
    segment: int

    @classmethod
    def of(cls, taps: Taps, width: int) -> Plan:
        run = largest_divisor(width, MAX_ROWS)  # tiles never straddle rows
        tiles = width // run
        chunk = largest_divisor(taps.steps, CHUNK_STEPS)
        per_pair = 2 * run * 4 * QUADS * chunk  # B bytes per pixel-tile pair and chunk
        segment = largest_divisor(tiles // 2, max(1, B_BYTES // per_pair)) if tiles > 1 else 1
        return cls(run, tiles, taps, chunk, segment)

    @property
    def key(self) -> str:
        return f"{self.run}x{self.tiles}_{self.taps.key}_{self.chunk}x{self.segment}"


def pack_weight(weight: np.ndarray, spec: ConvSpec, kind: Kind) -> np.ndarray:
    """OIHW -> ``[OB, steps, 16, 16, depth]`` (OB even, at least 2: the kernel takes channel
    blocks in pairs), zeros in padded channels, blocks and taps."""
    oc, ic, kh, kw = weight.shape
    taps, sw, depth = Taps.of(spec, kind), spec.strides[1], kind.depth
    kx_span = taps.kxq * sw
    w = np.zeros((round_up(oc, 2 * LANES), taps.qt * kind.per_row, kh, kx_span), weight.dtype)
    w[:oc, :ic, :, :kw] = weight
    # columns kx = kxq * sw + kxp; keep kxp < taps.kxp (a 1-wide kernel has one phase)
    w = w.reshape(-1, LANES, taps.qt, QUADS, depth, kh, taps.kxq, sw)[..., : taps.kxp]
    # -> [OB, kh, kxq, kxp, qt, oi, quad, depth]
    w = w.transpose(0, 5, 6, 7, 2, 1, 3, 4)
    return np.ascontiguousarray(w.reshape(w.shape[0], taps.steps, LANES, QUADS, depth))


def conv(
    data: te.Tensor, packed: te.Tensor, spec: ConvSpec, kind: Kind, operands: Any, attrs: dict
) -> te.Tensor:
    """The accumulators ``[N, OB, 16, OH, OW]`` (NCHW with channels in blocks of 16)."""
    top, left, _, _ = spec.padding
    h, w, c = spec.height, spec.width, spec.in_channels
    (sh, sw), depth = spec.strides, kind.depth
    taps = Taps.of(spec, kind)
    rows = (spec.out_h - 1) * sh + spec.kernel_h
    columns = spec.out_w + taps.kxq - 1  # per phase

    def interleaved(n, yp, qt, q, phase, xq, i):
        ci = (qt * QUADS + q) * depth + i
        y, x = yp - top, xq * sw + phase - left
        inside = tirx.all(y >= 0, y < h, x >= 0, x < w, ci < c)
        pixel = operands.element(data[n, tirx.min(ci, c - 1), y, x])
        return tirx.if_then_else(inside, pixel, operands.pad())

    shape = (spec.batch, rows, taps.qt, QUADS, taps.kxp, columns, depth)
    packed_data = te.compute(shape, interleaved, name="data_pack", attrs=STAGE_ATTRS)
    k = te.reduce_axis((0, taps.steps * QUADS), "k")
    i = te.reduce_axis((0, depth), "i")

    def value(n, ob, oi, y, x):
        ky, kxq, kxp, qt = taps.split(k // QUADS)
        pixel = packed_data[n, y * sh + ky, qt, k % QUADS, kxp, x + kxq, i]
        return te.sum(kind.product(pixel, packed[ob, k // QUADS, oi, k % QUADS, i]), axis=[k, i])

    shape = (spec.batch, int(packed.shape[0]), LANES, spec.out_h, spec.out_w)
    return te.compute(shape, value, name="conv", attrs={**attrs, TAPS_KEY: taps.key})


def unpack(acc: te.Tensor, corr: te.Tensor, spec: ConvSpec, operands: Any) -> te.Tensor:
    shape = (spec.batch, spec.out_channels, spec.out_h, spec.out_w)

    def value(n, c, y, x):
        return operands.result(acc[n, c // LANES, c % LANES, y, x], corr[c])

    return te.compute(shape, value, name="unpack")


def _functions(kind: Kind, plan: Plan, blocks: int, scope: str):
    """(description, implementation) of ``blocks`` channel blocks x one output row over all
    of K."""
    depth, storage, weight, acc, product = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.product,
    )  # fmt: skip
    taps, width = plan.taps, plan.run * plan.tiles
    steps, kh, columns = taps.steps, taps.kh, width + taps.kxq - 1
    extern, element_bytes = name_of(kind, plan), 4 // depth
    b_shape = (kh, taps.qt, QUADS, taps.kxp, columns, depth)
    a_shape = (blocks, steps, LANES, QUADS, depth)

    def b_index(k, x, i):
        ky, kxq, kxp, qt = taps.split(k // QUADS)
        return ky, qt, k % QUADS, kxp, x + kxq, i

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        s0, s1, s2, s3, s4 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        sc, sr = T.int32(), T.int32()
        A = T.match_buffer(a, a_shape, weight, offset_factor=1)
        B = T.match_buffer(b, b_shape, storage, offset_factor=1, strides=[s0, s1, s2, s3, s4, 1])
        C = T.match_buffer(
            c, (blocks, LANES, 1, width), acc, offset_factor=1, scope=scope,
            strides=[sc, sr, width, 1],
        )  # fmt: skip
        with T.sblock("root"):
            T.reads(
                C[0:blocks, 0:LANES, 0:1, 0:width],
                B[0:kh, 0 : taps.qt, 0:QUADS, 0 : taps.kxp, 0:columns, 0:depth],
                A[0:blocks, 0:steps, 0:LANES, 0:QUADS, 0:depth],
            )
            T.writes(C[0:blocks, 0:LANES, 0:1, 0:width])
            for o, m, x, k, i in T.grid(blocks, LANES, width, steps * QUADS, depth):
                with T.sblock("update"):
                    vo, vm, vx, vk, vi = T.axis.remap("SSSRR", [o, m, x, k, i])
                    C[vo, vm, 0, vx] = C[vo, vm, 0, vx] + product(
                        B[b_index(vk, vx, vi)], A[vo, vk // QUADS, vm, vk % QUADS, vi]
                    )

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        s0, s1, s2, s3, s4 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        sc, sr = T.int32(), T.int32()
        A = T.match_buffer(a, a_shape, weight, offset_factor=1)
        B = T.match_buffer(b, b_shape, storage, offset_factor=1, strides=[s0, s1, s2, s3, s4, 1])
        C = T.match_buffer(
            c, (blocks, LANES, 1, width), acc, offset_factor=1, scope=scope,
            strides=[sc, sr, width, 1],
        )  # fmt: skip
        with T.sblock("root"):
            T.reads(
                C[0:blocks, 0:LANES, 0:1, 0:width],
                B[0:kh, 0 : taps.qt, 0:QUADS, 0 : taps.kxp, 0:columns, 0:depth],
                A[0:blocks, 0:steps, 0:LANES, 0:QUADS, 0:depth],
            )
            T.writes(C[0:blocks, 0:LANES, 0:1, 0:width])
            T.evaluate(
                T.call_extern(
                    "int32", extern,
                    C.access_ptr("rw"), T.Cast("int64", sc * 4), T.Cast("int64", sr * 4),
                    A.access_ptr("r"),
                    B.access_ptr("r"), T.Cast("int64", s0 * element_bytes),
                    T.Cast("int64", s1 * element_bytes), T.Cast("int64", s2 * element_bytes),
                    T.Cast("int64", s3 * element_bytes),
                    blocks,
                )
            )  # fmt: skip

    return desc, impl


def name_of(kind: Kind, plan: Plan) -> str:
    return f"{PREFIX}{kind.name}_{plan.key}"


@functools.cache
def intrinsic(kind: Kind, plan: Plan, blocks: int) -> str:
    """The tensor intrinsic (global and ``.local`` accumulators) for ``blocks`` channel blocks
    x an output row."""
    name = f"{name_of(kind, plan)}_{blocks}"
    with cheap_frame_info():
        for scope, suffix in (("global", ""), ("local", intrinsics.LOCAL)):
            desc, impl = _functions(kind, plan, blocks, scope)
            TensorIntrin.register(name + suffix, desc, impl, override=True)
    return name


NAME = re.compile(rf"{PREFIX}(\w+?)_(\d+)x(\d+)_(\d+)x(\d+)x(\d+)x(\d+)_(\d+)x(\d+)_(\d+)")


def register_named(text: str) -> None:
    """Register every intrinsic of this form named in ``text`` (see :func:`.amx.register_named`)."""
    kinds = {k.name: k for k in KINDS_BY_KEY.values()}
    for found in NAME.finditer(text):
        if (kind := kinds.get(found[1])) is not None:
            run, tiles, kh, kxq, kxp, qt, chunk, segment, blocks = (
                int(v) for v in found.groups()[1:]
            )
            plan = Plan(run, tiles, Taps(kh, kxq, kxp, qt), chunk, segment)
            intrinsic(kind, plan, blocks)


def _schedule_pack(sch: s_tir.Schedule, pack: s_tir.schedule.SBlockRV) -> None:
    """Rows in parallel; the column loop left to LLVM's loop vectorizer (it turns the four
    channel streams into interleaving shuffles), the channel-in-group loop unrolled."""
    n, yp, qt, _, _, _, i = sch.get_loops(pack)
    sch.parallel(sch.fuse(n, yp, qt))
    sch.unroll(i)


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, kind: Kind) -> None:
    """One output row of all channel blocks (deep layers at low resolution: of a pair, while
    all rows pass) per parallel task and call, its epilogue attached."""
    n, ob, oi, y, x, k, i = sch.get_loops(block)
    (pack,) = sch.get_producers(block)
    taps = Taps(*(int(v) for v in str(sch.get(block).annotations[TAPS_KEY]).split("x")))
    width = extent(sch, x)
    plan = Plan.of(taps, width)
    # The larger operand is read once per task: weights larger than the input (deep layers
    # at low resolution) stay per pair of channel blocks while all rows pass.
    weights = extent(sch, ob) * LANES * taps.steps * kind.per_row
    pixels = extent(sch, y) * width * taps.qt * kind.per_row
    if weights > pixels and extent(sch, ob) > 2:
        ob_o, ob_i = sch.split(ob, [None, 2])
        sch.reorder(n, ob_o, y, ob_i, oi)
        fused = sch.fuse(n, ob_o, y)
    else:
        ob_i = ob
        sch.reorder(n, y, ob, oi)
        fused = sch.fuse(n, y)
    sch.parallel(fused)
    attach_epilogue(sch, block, fused)
    _schedule_pack(sch, pack)
    name = intrinsic(kind, plan, extent(sch, ob_i))
    init = sch.decompose_reduction(block, ob_i)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ob_i, name + intrinsics.LOCAL)
    # A holds the (signed) weights, B the (unsigned) data: tdpbsud, not tdpbusd.
    instruction = "tdpbsud" if kind.name == "int8" else kind.instruction
    ir = direct_llvm_ir(instruction, name_of(kind, plan), plan)
    sch.annotate(fused, "pragma_import_llvm", ir)
