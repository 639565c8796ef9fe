"""The AMX microkernel: LLVM IR that TVM imports into a conv's module and inlines.

``instruction`` is ``tdpbf16ps`` or ``tdpbusd`` (:func:`direct_llvm_ir`: ``tdpbsud``); tiles
are 16 rows x 64 bytes (C: 16 accumulators of 32 bits per row; A: a tile row of K per output
pixel; B: 16 K-pairs/quads x 16 output channels, 1 KiB), the layout :mod:`dlas.algorithms.amx`
packs.
"""

from __future__ import annotations

from typing import Any


def _declarations(tdp: str) -> str:
    """What a microkernel calls: the tile intrinsics, ``tdp`` and ``syscall``, and its
    once-per-process flag for the tile-data permission."""
    return f"""declare void @llvm.x86.ldtilecfg(ptr)
declare void @llvm.x86.tileloadd64(i8 immarg, ptr, i64)
declare void {tdp}(i8 immarg, i8 immarg, i8 immarg)
declare void @llvm.x86.tilestored64(i8 immarg, ptr, i64)
declare i64 @syscall(i64, ...)
@dlas_amx_permitted = internal global i8 0
"""


# A microkernel's entry: asks Linux for the tile registers on the first call, then goes on
# at block %config. 158 = SYS_arch_prctl, 4131 = ARCH_REQ_XCOMP_PERM, 18 = XFEATURE_XTILEDATA.
PERMIT = """entry:
  %ready = load i8, ptr @dlas_amx_permitted
  %isready = icmp ne i8 %ready, 0
  br i1 %isready, label %config, label %permit
permit:
  %ignored = call i64 (i64, ...) @syscall(i64 158, i64 4131, i64 18)
  store i8 1, ptr @dlas_amx_permitted
  br label %config
config:
"""


def llvm_ir(instruction: str, extern: str) -> str:
    """(C, C block step, A rows, A row stride, B panel, B block step, K tiles, rows, blocks)
    -> 0, strides and steps in bytes. ``blocks`` output-channel blocks share one A tile per
    K step; they go in pairs (tiles 0, 1: C; 2: A; 3, 4: B), two independent accumulators
    per A load, and the tile configuration is loaded once per call."""
    tdp = f"@llvm.x86.{instruction}"

    def k_loop(label: str, entry: str, after: str, accumulators: list[tuple[int, str, int]]) -> str:
        loads = "".join(
            f"  %{label}pb{t} = getelementptr i8, ptr %{b}, i64 %{label}offb\n"
            f"  call void @llvm.x86.tileloadd64(i8 {t}, ptr %{label}pb{t}, i64 64)\n"
            for _, b, t in accumulators
        )
        products = "".join(f"  call void {tdp}(i8 {c}, i8 2, i8 {t})\n" for c, _, t in accumulators)
        return (
            f"{label}:\n"
            f"  %{label}i = phi i64 [ 0, %{entry} ], [ %{label}next, %{label} ]\n"
            f"  %{label}offa = shl i64 %{label}i, 6\n"
            f"  %{label}pa = getelementptr i8, ptr %a, i64 %{label}offa\n"
            f"  call void @llvm.x86.tileloadd64(i8 2, ptr %{label}pa, i64 %stride)\n"
            f"  %{label}offb = shl i64 %{label}i, 10\n"
            f"{loads}{products}"
            f"  %{label}next = add i64 %{label}i, 1\n"
            f"  %{label}done = icmp eq i64 %{label}next, %count\n"
            f"  br i1 %{label}done, label %{after}, label %{label}\n"
        )

    return f"""
{_declarations(tdp)}
define i32 @{extern}(ptr %c, i64 %cstep, ptr %a, i32 %lda, ptr %b, i64 %bstep,
                     i32 %tiles, i32 %rows, i32 %blocks) {{
{PERMIT}  %cfg = alloca [64 x i8], align 64
  store <8 x i64> zeroinitializer, ptr %cfg, align 64
  store i8 1, ptr %cfg
  %colsb = getelementptr i8, ptr %cfg, i64 16
  store <5 x i16> <i16 64, i16 64, i16 64, i16 64, i16 64>, ptr %colsb, align 2
  %r8 = trunc i32 %rows to i8
  %rv0 = insertelement <5 x i8> <i8 0, i8 0, i8 0, i8 16, i8 16>, i8 %r8, i32 0
  %rv1 = insertelement <5 x i8> %rv0, i8 %r8, i32 1
  %rv2 = insertelement <5 x i8> %rv1, i8 %r8, i32 2
  %rowsp = getelementptr i8, ptr %cfg, i64 48
  store <5 x i8> %rv2, ptr %rowsp, align 1
  call void @llvm.x86.ldtilecfg(ptr %cfg)
  %stride = sext i32 %lda to i64
  %count = zext i32 %tiles to i64
  %nb = zext i32 %blocks to i64
  %pairs = lshr i64 %nb, 1
  br label %pair
pair:
  %p = phi i64 [ 0, %config ], [ %pnext, %pairdone ]
  %more = icmp ult i64 %p, %pairs
  br i1 %more, label %pairbody, label %tail
pairbody:
  %ob0 = shl i64 %p, 1
  %co0 = mul i64 %ob0, %cstep
  %c0 = getelementptr i8, ptr %c, i64 %co0
  %c1 = getelementptr i8, ptr %c0, i64 %cstep
  %bo0 = mul i64 %ob0, %bstep
  %b0 = getelementptr i8, ptr %b, i64 %bo0
  %b1 = getelementptr i8, ptr %b0, i64 %bstep
  call void @llvm.x86.tileloadd64(i8 0, ptr %c0, i64 64)
  call void @llvm.x86.tileloadd64(i8 1, ptr %c1, i64 64)
  br label %two
{k_loop("two", "pairbody", "pairdone", [(0, "b0", 3), (1, "b1", 4)])}
pairdone:
  call void @llvm.x86.tilestored64(i8 0, ptr %c0, i64 64)
  call void @llvm.x86.tilestored64(i8 1, ptr %c1, i64 64)
  %pnext = add i64 %p, 1
  br label %pair
tail:
  %odd = and i64 %nb, 1
  %hasodd = icmp ne i64 %odd, 0
  br i1 %hasodd, label %single, label %exit
single:
  %obs = sub i64 %nb, 1
  %cos = mul i64 %obs, %cstep
  %cs = getelementptr i8, ptr %c, i64 %cos
  %bos = mul i64 %obs, %bstep
  %bs = getelementptr i8, ptr %b, i64 %bos
  call void @llvm.x86.tileloadd64(i8 0, ptr %cs, i64 64)
  br label %one
{k_loop("one", "single", "singledone", [(0, "bs", 3)])}
singledone:
  call void @llvm.x86.tilestored64(i8 0, ptr %cs, i64 64)
  br label %exit
exit:
  ret i32 0
}}
"""


def direct_llvm_ir(instruction: str, extern: str, plan: Any) -> str:
    """The microkernel of :mod:`.amx_direct` for one output row (``plan``: a
    :class:`dlas.algorithms.amx_direct.Plan`): (C, C block step, C row stride, A, B, B strides
    of ky / channel tile / tile row / phase, blocks) -> 0, all in bytes.

    An A tile is 16 output channels x a tile row of K (1 KiB; a block's ``steps`` tiles are
    contiguous), a B tile 16 channel groups x ``run`` pixels (4 bytes each), K step ``t`` at
    ``ky * sy + qt * sq + kxp * sp + kxq * 4``. Channel blocks go in pairs (A tiles 4, 5),
    pixel tiles in pairs (B tiles 6, 7) into four accumulators (0-3); an odd last pixel tile
    runs with two. So that both operands come from L1, K is walked in chunks of ``chunk``
    steps and the row in segments of ``segment`` pixel-tile pairs: for each (segment, chunk)
    every channel-block pair passes over the segment's B tiles (which stay in L1), and each
    pair's chunk of A tiles serves all of the segment's pixel tiles; the accumulators are
    stored after each chunk."""
    tdp = f"@llvm.x86.{instruction}"
    width, steps = plan.run * 4, plan.taps.steps
    taps = plan.taps
    config = ", ".join(
        ["i8 1"] + ["i8 0"] * 15
        + [f"i16 {width}"] * 4 + ["i16 64"] * 2 + [f"i16 {width}"] * 2 + ["i16 0"] * 8
        + ["i8 16"] * 8 + ["i8 0"] * 8
    )  # fmt: skip
    types = ", ".join(["i8"] * 16 + ["i16"] * 16 + ["i8"] * 16)

    def loop(label: str, count: Any, body: str) -> str:
        """A counted loop ``%{label}.i`` (0 .. count-1) around ``body``, entered by a branch
        to ``%{label}.pre``, left at ``%{label}.exit``; ``body`` runs from block
        ``%{label}`` and ends with a branch to ``%{label}.latch``."""
        return (
            f"{label}.pre:\n  br label %{label}\n"
            f"{label}:\n  %{label}.i = phi i64 [ 0, %{label}.pre ], [ %{label}.n, %{label}.latch ]\n"
            f"{body}"
            f"{label}.latch:\n  %{label}.n = add i64 %{label}.i, 1\n"
            f"  %{label}.d = icmp eq i64 %{label}.n, {count}\n"
            f"  br i1 %{label}.d, label %{label}.exit, label %{label}\n"
            f"{label}.exit:\n"
        )

    def k_steps(label: str, tiles: list[tuple[int, int, int]], c: str, b: str, outer: str) -> str:
        """One chunk of K for accumulators ``tiles`` ((C, A, B) tile numbers) at C rows
        ``%{c}.r0/1``, B ``%{b}``, A ``%{outer}.a0/1``, chunk start ``%{outer}.base``."""
        a_tiles = sorted({a for _, a, _ in tiles})
        b_tiles = sorted({t for _, _, t in tiles})
        t = f"%{label}.t"
        body = (
            f"  {t} = add i64 %{label}.i, %{outer}.base\n"
            f"  %{label}.qt = urem i64 {t}, {taps.qt}\n"
            f"  %{label}.r1 = udiv i64 {t}, {taps.qt}\n"
            f"  %{label}.kxp = urem i64 %{label}.r1, {taps.kxp}\n"
            f"  %{label}.r2 = udiv i64 %{label}.r1, {taps.kxp}\n"
            f"  %{label}.kxq = urem i64 %{label}.r2, {taps.kxq}\n"
            f"  %{label}.ky = udiv i64 %{label}.r2, {taps.kxq}\n"
            f"  %{label}.o1 = mul i64 %{label}.ky, %sy\n"
            f"  %{label}.o2 = mul i64 %{label}.qt, %sqt\n"
            f"  %{label}.o3 = mul i64 %{label}.kxp, %sp\n"
            f"  %{label}.o4 = shl i64 %{label}.kxq, 2\n"
            f"  %{label}.s1 = add i64 %{label}.o1, %{label}.o2\n"
            f"  %{label}.s2 = add i64 %{label}.o3, %{label}.o4\n"
            f"  %{label}.ob = add i64 %{label}.s1, %{label}.s2\n"
            f"  %{label}.bt = getelementptr i8, ptr %{b}, i64 %{label}.ob\n"
            f"  %{label}.oa = shl i64 {t}, 10\n"
        )
        for a in a_tiles:
            body += (
                f"  %{label}.pa{a} = getelementptr i8, ptr %{outer}.a{a - 4}, i64 %{label}.oa\n"
                f"  call void @llvm.x86.tileloadd64(i8 {a}, ptr %{label}.pa{a}, i64 64)\n"
            )
        for bt in b_tiles:
            body += (
                f"  %{label}.pb{bt} = getelementptr i8, ptr %{label}.bt, i64 {(bt - 6) * width}\n"
                f"  call void @llvm.x86.tileloadd64(i8 {bt}, ptr %{label}.pb{bt}, i64 %sq)\n"
            )
        body += "".join(f"  call void {tdp}(i8 {ct}, i8 {a}, i8 {bt})\n" for ct, a, bt in tiles)
        body += f"  br label %{label}.latch\n"
        ptrs = "".join(
            f"  %{label}.c{ct} = getelementptr i8, ptr %{c}.r{ct // 2}, i64 {ct % 2 * width}\n"
            for ct, _, _ in tiles
        )
        loads = "".join(
            f"  call void @llvm.x86.tileloadd64(i8 {ct}, ptr %{label}.c{ct}, i64 %crow)\n"
            for ct, _, _ in tiles
        )
        stores = "".join(
            f"  call void @llvm.x86.tilestored64(i8 {ct}, ptr %{label}.c{ct}, i64 %crow)\n"
            for ct, _, _ in tiles
        )
        return f"{ptrs}{loads}  br label %{label}.pre\n{loop(label, plan.chunk, body)}{stores}"

    def pair_body(label: str, inner: str) -> str:
        """The body of channel-block pair loop ``label`` (A tiles ``%{label}.a0/1``, C block
        rows ``%{label}.cb0/1``) around ``inner``."""
        return (
            f"  %{label}.b0 = shl i64 %{label}.i, 1\n"
            f"  %{label}.ao = mul i64 %{label}.b0, {steps * 1024}\n"
            f"  %{label}.a0 = getelementptr i8, ptr %a, i64 %{label}.ao\n"
            f"  %{label}.a1 = getelementptr i8, ptr %{label}.a0, i64 {steps * 1024}\n"
            f"  %{label}.co = mul i64 %{label}.b0, %cblock\n"
            f"  %{label}.cb0 = getelementptr i8, ptr %c, i64 %{label}.co\n"
            f"  %{label}.cb1 = getelementptr i8, ptr %{label}.cb0, i64 %cblock\n"
            f"{inner}"
        )

    # quad: pixel-tile pair j of segment s
    quad_k = k_steps("kq", [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)], "jq", "jq.b", "pq")
    jq = (
        f"  %jq.pair = add i64 %jq.i, %seg.first\n"
        f"  %jq.x = mul i64 %jq.pair, {2 * width}\n"
        f"  %jq.b = getelementptr i8, ptr %b, i64 %jq.x\n"
        f"  %jq.r0 = getelementptr i8, ptr %pq.cb0, i64 %jq.x\n"
        f"  %jq.r1 = getelementptr i8, ptr %pq.cb1, i64 %jq.x\n"
        f"{quad_k}  br label %jq.latch\n"
    )
    pq = pair_body(
        "pq",
        f"  %pq.base = mul i64 %cq.i, {plan.chunk}\n"
        f"  br label %jq.pre\n{loop('jq', plan.segment, jq)}  br label %pq.latch\n",
    )
    chunk_q = f"  br label %pq.pre\n{loop('pq', '%pairs', pq)}  br label %cq.latch\n"
    seg = (
        f"  %seg.first = mul i64 %seg.i, {plan.segment}\n"
        f"  br label %cq.pre\n{loop('cq', steps // plan.chunk, chunk_q)}  br label %seg.latch\n"
    )
    pair_count = plan.tiles // 2
    body = (
        f"  br label %seg.pre\n{loop('seg', pair_count // plan.segment, seg)}" if pair_count else ""
    )
    if plan.tiles % 2:
        two_k = k_steps("k2", [(0, 4, 6), (2, 5, 6)], "j2", "j2.b", "p2")
        p2 = pair_body(
            "p2",
            f"  %p2.base = mul i64 %c2.i, {plan.chunk}\n"
            f"  %j2.x = mul i64 {plan.tiles - 1}, {width}\n"
            f"  %j2.b = getelementptr i8, ptr %b, i64 %j2.x\n"
            f"  %j2.r0 = getelementptr i8, ptr %p2.cb0, i64 %j2.x\n"
            f"  %j2.r1 = getelementptr i8, ptr %p2.cb1, i64 %j2.x\n"
            f"{two_k}  br label %p2.latch\n",
        )
        chunk_2 = f"  br label %p2.pre\n{loop('p2', '%pairs', p2)}  br label %c2.latch\n"
        body += f"  br label %c2.pre\n{loop('c2', steps // plan.chunk, chunk_2)}"
    return f"""
{_declarations(tdp)}@{extern}_config = internal constant <{{ {types} }}> <{{ {config} }}>, align 64

define i32 @{extern}(ptr %c, i64 %cblock, i64 %crow, ptr %a, ptr %b, i64 %sy, i64 %sqt,
                     i64 %sq, i64 %sp, i32 %blocks) {{
{PERMIT}  call void @llvm.x86.ldtilecfg(ptr @{extern}_config)
  %nb = zext i32 %blocks to i64
  %pairs = lshr i64 %nb, 1
{body}  ret i32 0
}}
"""
