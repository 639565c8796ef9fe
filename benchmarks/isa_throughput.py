"""Peak multiply-add rate of one core for float32 FMA, bf16 vdpbf16ps and bf16 AMX tiles.

    python benchmarks/isa_throughput.py                 # 12 independent chains, 1e8 iterations
    python benchmarks/isa_throughput.py --iterations 1000000

Why bf16 through ``vdpbf16ps`` does not beat float32 on some CPUs while AMX does: a C loop of
independent accumulators (no memory traffic) per instruction, compiled with the system's C
compiler for this CPU, timed on one core. A vdpbf16ps does 32 multiply-adds, an FMA on 16
float32 lanes 16, a tdpbf16ps on full 16 x 64-byte tiles 16 x 16 x 32; the figures are
GFLOP/s (2 per multiply-add). An instruction family the CPU lacks is skipped, saying so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec + t.tv_nsec * 1e-9; }
#define R(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  const char *which = argv[2];
  double t, flops;
  float sink = 0;
  if (!strcmp(which, "fma")) {
#define D(i) __m512 c##i = _mm512_set1_ps(0.f);
    R(D)
    __m512 a = _mm512_set1_ps(1e-9f), b = _mm512_set1_ps(1.0f);
    t = now();
#define F(i) c##i = _mm512_fmadd_ps(a, b, c##i);
    for (long k = 0; k < n; k++) { R(F) }
    t = now() - t;
#define S(i) sink += _mm512_reduce_add_ps(c##i);
    R(S)
    flops = 2.0 * n * 12 * 16;
  } else if (!strcmp(which, "vdpbf16ps")) {
    R(D)
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3000);
    t = now();
#define B(i) c##i = _mm512_dpbf16_ps(c##i, x, y);
    for (long k = 0; k < n; k++) { R(B) }
    t = now() - t;
    R(S)
    flops = 2.0 * n * 12 * 32;
  } else {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { printf("no permission\n"); return 1; }
    struct { unsigned char palette, start, reserved[14]; unsigned short colsb[16];
             unsigned char rows[16]; } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    _tile_loadconfig(&cfg);
    static unsigned short tile[16 * 32];
    static float out[16 * 16];
    for (int i = 0; i < 16 * 32; i++) tile[i] = 0x3000;
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, tile, 64); _tile_loadd(5, tile, 64);
    _tile_loadd(6, tile, 64); _tile_loadd(7, tile, 64);
    n /= 16;
    t = now();
    for (long k = 0; k < n; k++) {
      _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    t = now() - t;
    _tile_stored(0, out, 64);
    _tile_release();
    sink = out[0];
    flops = 2.0 * n * 4 * 16 * 16 * 32;
  }
  printf("%.1f %g\n", flops / t / 1e9, sink);
  return 0;
}
"""

FAMILIES = {  # name: (cpuinfo flags needed, compiler flags)
    "fma": (("avx512f",), ["-mavx512f"]),
    "vdpbf16ps": (("avx512f", "avx512_bf16"), ["-mavx512f", "-mavx512bf16"]),
    "tdpbf16ps": (("amx_tile", "amx_bf16"), ["-mamx-tile", "-mamx-bf16"]),
}


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000_000)
    args = parser.parse_args()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler (cc/gcc): nothing measured")
        return
    flags = cpu_flags()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "unknown",
    )  # fmt: skip
    print(f"CPU {model}, one core, {args.iterations} iterations, load {os.getloadavg()}")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "peak.c"
        src.write_text(SOURCE)
        binary = Path(tmp) / "peak"
        all_flags = sorted({f for _, fl in FAMILIES.values() for f in fl})
        subprocess.run([cc, "-O2", *all_flags, str(src), "-o", str(binary)], check=True)
        for name, (needed, _) in FAMILIES.items():
            missing = [f for f in needed if f not in flags]
            if missing:
                print(f"  {name:10s} skipped: this CPU lacks {', '.join(missing)}")
                continue
            out = subprocess.run(
                [str(binary), str(args.iterations), name], capture_output=True, text=True
            )
            if out.returncode:
                print(f"  {name:10s} failed: {out.stdout.strip()} {out.stderr.strip()}")
                continue
            rates[name] = float(out.stdout.split()[0])
            print(f"  {name:10s} {rates[name]:8.1f} GFLOP/s")
    if "fma" in rates:
        for name in ("vdpbf16ps", "tdpbf16ps"):
            if name in rates:
                print(f"  {name} / fma: x{rates[name] / rates['fma']:.2f}")


if __name__ == "__main__":
    main()
