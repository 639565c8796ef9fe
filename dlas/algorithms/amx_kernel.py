"""The AMX microkernel: LLVM IR that TVM imports into a conv's module and inlines.

``instruction`` is ``tdpbf16ps`` or ``tdpbusd``; tiles are 16 rows x 64 bytes (C: 16
accumulators of 32 bits per row; A: a tile row of K per output pixel; B: 16 K-pairs/quads x
16 output channels, 1 KiB), the layout :mod:`dlas.algorithms.amx` packs.
"""

from __future__ import annotations


def llvm_ir(instruction: str, extern: str) -> str:
    """(C, C block step, A rows, A row stride, B panel, B block step, K tiles, rows, blocks)
    -> 0, strides and steps in bytes. ``blocks`` output-channel blocks share one A tile per
    K step; they go in pairs (tiles 0, 1: C; 2: A; 3, 4: B), two independent accumulators
    per A load, and the tile configuration is loaded once per call. 158 = SYS_arch_prctl,
    4131 = ARCH_REQ_XCOMP_PERM, 18 = XFEATURE_XTILEDATA."""
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
declare void @llvm.x86.ldtilecfg(ptr)
declare void @llvm.x86.tileloadd64(i8 immarg, ptr, i64)
declare void {tdp}(i8 immarg, i8 immarg, i8 immarg)
declare void @llvm.x86.tilestored64(i8 immarg, ptr, i64)
declare i64 @syscall(i64, ...)
@dlas_amx_permitted = internal global i8 0

define i32 @{extern}(ptr %c, i64 %cstep, ptr %a, i32 %lda, ptr %b, i64 %bstep,
                     i32 %tiles, i32 %rows, i32 %blocks) {{
entry:
  %ready = load i8, ptr @dlas_amx_permitted
  %isready = icmp ne i8 %ready, 0
  br i1 %isready, label %config, label %permit
permit:
  %ignored = call i64 (i64, ...) @syscall(i64 158, i64 4131, i64 18)
  store i8 1, ptr @dlas_amx_permitted
  br label %config
config:
  %cfg = alloca [64 x i8], align 64
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
