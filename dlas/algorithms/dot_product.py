"""int8 and bfloat16 convolutions and dense layers through the x86 dot-product instructions.

One output vector is 16 lanes (channels; ``direct``'s 1x1 layers put pixels there instead,
:mod:`.dot_rows`); one instruction adds, to each lane, a short dot product of ``depth`` input
elements (the same ones for all 16 lanes, broadcast) with a 16 x ``depth`` block of weights:

* int8: ``vpdpbusd`` (AVX512-VNNI, u8 x s8), ``sdot`` (AArch64 +dotprod, s8 x s8) or
  ``vpmaddubsw`` + ``vpmaddwd`` (AVX512-BW, u8 x s8 with 7-bit weights), depth 4, int32 lanes
  (:class:`intrinsics.Int8Kernel`; elsewhere widened int32);
* bf16: ``vdpbf16ps`` (AVX512-BF16), depth 2, float32 lanes (``gemm``, int8 too: AMX tiles
  where the CPU has them, :mod:`.amx`, wide layers :mod:`.amx_direct`). bfloat16 values
  travel as their 16-bit patterns (uint16) in the kernels: TVM legalizes bfloat16-typed
  expressions to float32, undoing the packing.

So the reduction is split ``k = kq * depth + ii`` with ``ii`` innermost in both operands:

* data: NCHW[cbi]c (``cbi`` a multiple of ``depth``; ``spatial_pack`` packs up to 16
  channels, ``direct`` the fewest it can, ``depth``) or, for ``gemm``, im2col rows
  ``[N, OH*OW, K]`` (K padded to a multiple of ``depth``);
* weights, packed at compile time: ``[OC/16, IC/cbi, KH, KW, cbi/depth, 16, depth]``
  (``gemm``: ``[OC/16, K/depth, 16, depth]``), channels and K padded with zeros;
* the (16, depth) block of the update is tensorized (:mod:`dlas.algorithms.intrinsics`).

``vpdpbusd`` multiplies unsigned by signed bytes, ``sdot`` signed by signed. Activations of
the other kind are shifted by 128 while being packed (+128 for int8 into uint8, -128 for uint8
into int8; padding too: padded zeros become the shift) and the exact correction
``shift * sum(W[oc])`` is subtracted from every output: the int32 sums stay exact.

Depthwise and grouped layers have no channel reduction per output vector: they keep their
algorithm's own (widened) kernel, and the layer table says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from . import amx, amx_direct, dot_rows, intrinsics, stages
from .operands import SHIFT, Operands
from .packing import in_block, pack_conv_weight, pack_data, pack_gemm_weight, whole_channel_rows
from .schedules import extent
from .shapes import (
    LANES,
    STAGE_ATTRS,
    ConvSpec,
    largest_divisor,
    main_attrs,
    pixel_tile,
)

# Input channels (spatial forms) / K elements (gemm) reduced per pass over a row of tiles:
# a chunk's weights (16 lanes x chunk) stay in L1 across the row.
CHANNEL_CHUNK = 64
K_CHUNK = 576
OP_PREFIX = "dot"
# Block annotation: the tensor intrinsic chosen for the target at legalization (scheduling
# runs outside the target's scope).
INTRIN_KEY = "dlas.intrin"
# Channel-lane tiles of half the register budget (int8 on AVX2, Zen 3: ResNet18-32 1.16x with
# spatial_pack and 1.25x with direct, VGG-16-32 1.07x, MobileNetV2-32 1.00x against the full 6).
HALF_TILE_INTRINSICS = (intrinsics.AVX2_INTRIN,)


@dataclass(frozen=True)
class Flavor:
    name: str
    inputs: tuple[str, ...]  # data dtypes it computes
    depth: int
    acc: str

    def intrinsic(self, target: Any, *, rows: bool = False) -> str | None:
        """The tensor intrinsic on ``target``; with ``rows``, the pixels-in-lanes one."""
        if self.name == "int8":
            return intrinsics.int8_intrinsic(target, rows=rows)
        return None if rows else intrinsics.bf16_intrinsic(target)

    def isa(self, target: Any) -> str:
        if self.name == "int8":
            return intrinsics.int8_isa(target)
        return "avx512bf16" if intrinsics.has_bf16(target) else "none"

    def operands(self, data_dtype: str) -> Operands:
        """How the current target's kernel takes ``data_dtype`` activations and the weights."""
        if self.name == "bf16":
            return Operands("uint16", 0, 0)
        kernel = intrinsics.int8_kernel(current_target())
        if kernel is None or kernel.data == data_dtype:
            return Operands(data_dtype, 0, kernel.weight_shift if kernel else 0)
        return Operands(kernel.data, SHIFT if data_dtype == "int8" else -SHIFT, kernel.weight_shift)

    def product(self, a: tirx.PrimExpr, b: tirx.PrimExpr) -> tirx.PrimExpr:
        """What the tensor intrinsic's description multiplies (term for term)."""
        if self.name == "bf16":
            return intrinsics.bf16_value(a) * intrinsics.bf16_value(b)
        return a.astype("int32") * b.astype("int32")


INT8 = Flavor("int8", ("uint8", "int8"), 4, "int32")
BF16 = Flavor("bf16", ("bfloat16",), 2, "float32")


def flavor_of(dtype: str) -> Flavor | None:
    return next((f for f in (INT8, BF16) if dtype in f.inputs), None)


def current_target() -> Any:
    return tvm.target.Target.current(allow_none=True)


def unsupported(spec: ConvSpec, flavor: Flavor) -> str | None:
    """Why this conv cannot run through the dot product (None when it can)."""
    if spec.out_dtype != flavor.acc:
        return f"{spec.dtype} -> {spec.out_dtype} is not {flavor.name} -> {flavor.acc}"
    if spec.groups > 1:
        kind = "depthwise" if spec.depthwise else "grouped"
        return f"{flavor.name} {kind}: no channel reduction per output vector"
    if flavor.intrinsic(current_target()) is None:
        return f"{flavor.name} on a target without its dot-product instruction"
    return None


def amx_kind(spec: ConvSpec, form: str) -> amx.Kind | None:
    """im2col convs run on AMX tiles where the CPU has them for their dtype (:mod:`.amx`)."""
    return amx.kind_for(spec.dtype, current_target()) if form == "im2col" else None


def is_dot_block(sch: s_tir.Schedule, block: Any) -> bool:
    return str(sch.get(block).annotations.get("dlas.op", "")).startswith(OP_PREFIX)


# --- emission ----------------------------------------------------------------------------
def _attrs(algorithm: str, form: str, flavor: Flavor, macs: int) -> dict:
    name = flavor.intrinsic(current_target(), rows=form == dot_rows.FORM)
    return {**main_attrs(algorithm, f"{OP_PREFIX}_{form}", macs), INTRIN_KEY: name}


def emit_conv2d(
    bb: relax.BlockBuilder,
    data: relax.Expr,
    weight: np.ndarray,
    spec: ConvSpec,
    algorithm: str,
    form: str,
) -> relax.Expr:
    """``form``: ``nchwc`` (channel blocks of up to 16), ``narrow`` (blocks of one ``depth``),
    ``rows`` (pixels in the lanes, :mod:`.dot_rows`; ``narrow`` where the shape or the
    instruction family has none) or ``im2col``; the block is tagged with ``algorithm`` so that
    its schedule finds it."""
    flavor = flavor_of(spec.dtype)
    if form == dot_rows.FORM and not (
        dot_rows.applies(spec) and flavor.intrinsic(current_target(), rows=True)
    ):
        form = "narrow"
    ops = flavor.operands(spec.dtype)
    w = ops.weights(weight)
    corr = relax.const(ops.correction(w))
    attrs = _attrs(algorithm, form, flavor, spec.macs)
    if kind := amx_kind(spec, form):
        attrs[INTRIN_KEY] = f"{amx.ISA}_{kind.name}"
        # Wide layers multiply the weights by the input (no transposes), narrow ones patches.
        wide = amx_direct.applies(spec, kind)
        amx_form, unpack = (amx_direct, amx_direct.unpack) if wide else (amx, _unpack)
        packed = relax.const(amx_form.pack_weight(w, spec, kind))

        def compute(d: te.Tensor, p: te.Tensor, c: te.Tensor) -> te.Tensor:
            return unpack(amx_form.conv(d, p, spec, kind, ops, attrs), c, spec, ops)

    elif form == "im2col":
        packed = relax.const(pack_gemm_weight(whole_channel_rows(w, flavor.depth), flavor.depth))

        def compute(d: te.Tensor, p: te.Tensor, c: te.Tensor) -> te.Tensor:
            return _gemm_conv(d, p, c, spec, flavor, ops, attrs)
    elif form == dot_rows.FORM:
        packed = relax.const(dot_rows.pack_weight(w, flavor.depth))

        def compute(d: te.Tensor, p: te.Tensor, c: te.Tensor) -> te.Tensor:
            return dot_rows.conv(d, p, c, spec, flavor.product, ops, attrs)
    else:
        limit = LANES if form == "nchwc" else flavor.depth
        _, cbi = in_block(spec.in_channels, limit, flavor.depth)
        packed = relax.const(pack_conv_weight(w, cbi, flavor.depth))

        def compute(d: te.Tensor, p: te.Tensor, c: te.Tensor) -> te.Tensor:
            return _packed_conv(d, p, c, spec, flavor, ops, cbi, attrs)

    return bb.call_te(compute, data, packed, corr, primfunc_name_hint=f"conv2d_{flavor.name}")


def _unpack(conv: te.Tensor, corr: te.Tensor, spec: ConvSpec, ops: Operands) -> te.Tensor:
    shape = (spec.batch, spec.out_channels, spec.out_h, spec.out_w)

    def value(n, c, y, x):
        return ops.result(conv[n, c // LANES, y, x, c % LANES], corr[c])

    return te.compute(shape, value, name="unpack")


def _packed_conv(
    data: te.Tensor,
    packed: te.Tensor,
    corr: te.Tensor,
    spec: ConvSpec,
    flavor: Flavor,
    ops: Operands,
    cbi: int,
    attrs: dict,
) -> te.Tensor:
    d = pack_data(data, spec, cbi, element=ops.element, pad=ops.pad())
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    depth = flavor.depth
    ib = te.reduce_axis((0, int(d.shape[1])), "ib")
    kh = te.reduce_axis((0, spec.kernel_h), "kh")
    kw = te.reduce_axis((0, spec.kernel_w), "kw")
    iq = te.reduce_axis((0, cbi // depth), "iq")
    ii = te.reduce_axis((0, depth), "ii")

    def value(n, ob, y, x, oi):
        pixel = d[n, ib, y * sh + kh * dh, x * sw + kw * dw, iq * depth + ii]
        return te.sum(
            flavor.product(pixel, packed[ob, ib, kh, kw, iq, oi, ii]), axis=[ib, kh, kw, iq, ii]
        )

    shape = (spec.batch, int(packed.shape[0]), spec.out_h, spec.out_w, LANES)
    return _unpack(te.compute(shape, value, name="conv", attrs=attrs), corr, spec, ops)


def _gemm_conv(
    data: te.Tensor,
    packed: te.Tensor,
    corr: te.Tensor,
    spec: ConvSpec,
    flavor: Flavor,
    ops: Operands,
    attrs: dict,
) -> te.Tensor:
    kh_, kw_ = spec.kernel_h, spec.kernel_w
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, _, _ = spec.padding
    ow, depth = spec.out_w, flavor.depth
    k_pad = int(packed.shape[1]) * depth

    def col_value(n, p, k):  # K ordered (c, kh, kw) as the OIHW weight flattens
        c = k // (kh_ * kw_)
        y = (p // ow) * sh + (k // kw_ % kh_) * dh - top
        x = (p % ow) * sw + (k % kw_) * dw - left
        inside = tirx.all(k < spec.reduction, y >= 0, y < spec.height, x >= 0, x < spec.width)
        return tirx.if_then_else(inside, ops.element(data[n, c, y, x]), ops.pad())

    col = te.compute(
        (spec.batch, spec.out_h * ow, k_pad),
        col_value,
        name="im2col",
        attrs={**STAGE_ATTRS, stages.IM2COL_KEY: [kh_, kw_, ow]},
    )
    kq = te.reduce_axis((0, k_pad // depth), "kq")
    ii = te.reduce_axis((0, depth), "ii")

    def value(n, ob, y, x, oi):
        return te.sum(
            flavor.product(col[n, y * ow + x, kq * depth + ii], packed[ob, kq, oi, ii]),
            axis=[kq, ii],
        )

    shape = (spec.batch, int(packed.shape[0]), spec.out_h, ow, LANES)
    return _unpack(te.compute(shape, value, name="conv", attrs=attrs), corr, spec, ops)


def emit_dense(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, algorithm: str
) -> relax.Expr:
    """``data @ weight`` for 8-bit or bf16 data [M, K] and a constant [K, N] weight."""
    flavor = flavor_of(str(data.ty.dtype))
    ops = flavor.operands(str(data.ty.dtype))
    w = ops.weights(np.ascontiguousarray(weight.T))  # [N, K]
    packed = relax.const(pack_gemm_weight(w, flavor.depth))
    corr = relax.const(ops.correction(w))
    columns, depth = w.shape[0], flavor.depth
    m_by_k = int(np.prod([int(v) for v in data.ty.shape]))
    attrs = _attrs(algorithm, "dense", flavor, m_by_k * columns)

    def compute(a: te.Tensor, b: te.Tensor, c: te.Tensor) -> te.Tensor:
        m, k = (int(v) for v in a.shape)
        k_pad = int(b.shape[1]) * depth
        rows = te.compute(
            (m, k_pad),
            lambda i, j: tirx.if_then_else(j < k, ops.element(a[i, tirx.min(j, k - 1)]), ops.pad()),
            name="data_pack",
            attrs=STAGE_ATTRS,
        )
        kq = te.reduce_axis((0, k_pad // depth), "kq")
        ii = te.reduce_axis((0, depth), "ii")
        acc = te.compute(
            (1, int(b.shape[0]), 1, m, LANES),
            lambda n, ob, y, x, oi: te.sum(
                flavor.product(rows[x, kq * depth + ii], b[ob, kq, oi, ii]), axis=[kq, ii]
            ),
            name="dense",
            attrs=attrs,
        )

        def crop(i, j):
            return ops.result(acc[0, j // LANES, 0, i, j % LANES], c[j])

        return te.compute((m, columns), crop, name="crop")

    return bb.call_te(compute, data, packed, corr, primfunc_name_hint=f"dense_{flavor.name}")


# --- schedule ----------------------------------------------------------------------------
def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Register tile of pixels x (1 or 2) 16-lane vectors over the whole reduction; the
    reduction chunked over a row of tiles; the (16, depth) update tensorized."""
    name = str(sch.get(block).annotations[INTRIN_KEY])
    if kind := amx.KINDS_BY_KEY.get(name):
        wide = amx_direct.TAPS_KEY in sch.get(block).annotations
        (amx_direct if wide else amx).schedule(sch, block, kind)
        return
    if sch.get(block).annotations["dlas.op"] == f"{OP_PREFIX}_{dot_rows.FORM}":
        dot_rows.schedule(sch, block, name + intrinsics.LOCAL)
        return
    stages.schedule_im2col_rows(sch, block)
    n, ob, y, x, oi, first, *middle, ii = sch.get_loops(block)
    depth = extent(sch, ii)
    vectors = 2 if extent(sch, ob) % 2 == 0 else 1
    # The AVX2 pair keeps its int16 products in ymm registers of their own: half the tile.
    share = 2 if name in HALF_TILE_INTRINSICS else 1
    rows, cols = pixel_tile(extent(sch, y), extent(sch, x), vectors * share)
    ob_o, ob_i = sch.split(ob, [None, vectors])
    y_o, y_i = sch.split(y, [None, rows])
    x_o, x_i = sch.split(x, [None, cols])
    # Channel blocks (spatial forms: `first` steps cbi = depth * iq channels) or K groups
    # (im2col, dense) reduced per pass over a row of tiles.
    if middle:
        limit = max(1, CHANNEL_CHUNK // (depth * extent(sch, middle[-1])))
    else:
        limit = K_CHUNK // depth
    r_o, r_i = sch.split(first, [None, largest_divisor(extent(sch, first), limit)])
    sch.reorder(n, ob_o, y_o, r_o, x_o, r_i, *middle, y_i, x_i, ob_i, oi, ii)
    local = name + intrinsics.LOCAL
    fused = dot_rows.finish_tensorized(sch, block, [n, ob_o, y_o], r_o, [y_i, x_i, ob_i], oi, local)
    if name in intrinsics.LLVM_IMPORTS:  # the LLVM IR the intrinsic's extern call inlines
        sch.annotate(fused, "pragma_import_llvm", intrinsics.LLVM_IMPORTS[name])


# --- entry points for the algorithms -----------------------------------------------------
def try_conv2d(
    bb: relax.BlockBuilder,
    data: relax.Expr,
    weight: np.ndarray | relax.Expr,
    spec: ConvSpec,
    row: dict[str, Any],
    algorithm: str,
    form: str,
) -> relax.Expr | None:
    """The tensorized conv in ``form`` when ``spec`` allows it, else None (the caller's own
    kernel runs). int8/bf16 layers get a ``kernel`` column (the instruction family); one
    that cannot use the dot product says why in ``fallback``."""
    flavor = flavor_of(spec.dtype)
    if flavor is None:
        return None
    why = unsupported(spec, flavor)
    if why is None and not isinstance(weight, np.ndarray):
        why = "weights are not compile-time constants"
    if why is not None:
        row["kernel"] = "widened"
        row["fallback"] = row.get("fallback") or f"{why}: widened {flavor.acc} arithmetic"
        return None
    row["kernel"] = amx.ISA if amx_kind(spec, form) else flavor.isa(current_target())
    return emit_conv2d(bb, data, weight, spec, algorithm, form)


def try_dense(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, row: dict[str, Any]
) -> relax.Expr | None:
    """The tensorized dense layer for 8-bit or bf16 data when the target has the
    instruction, else None."""
    flavor = flavor_of(str(data.ty.dtype))
    if flavor is None:
        return None
    if flavor.intrinsic(current_target()) is None:
        row["kernel"] = "widened"
        row["fallback"] = f"{flavor.name} on a target without its dot-product instruction"
        return None
    row["kernel"] = flavor.isa(current_target())
    return emit_dense(bb, data, weight, "gemm")
