"""This host's roofline: float32 FMA peak, bf16 / int8 dot-product peaks where the CPU has the
instructions (micro-kernel or oneDNN GEMM, the higher), memory and L2 bandwidth
(dlas.devices.roofline), and the ridge points.

    python benchmarks/roofline.py                 # cached figures (measured on a miss)
    python benchmarks/roofline.py --fresh --threads 1,2

Micro-kernels of a few seconds each; best of a few runs. The load average is printed with
the figures: on a shared machine they are lower bounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from dlas.cache import Cache
from dlas.devices.roofline import cpu_flags, host_spec, load_or_measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--cache-dir", default=".cache/dlas")
    parser.add_argument("--fresh", action="store_true", help="measure again, replace the cache")
    args = parser.parse_args()
    root = Path(args.cache_dir).expanduser()
    flags = sorted(f for f in cpu_flags() if "avx512" in f or "amx" in f or "vnni" in f)
    print(f"CPU flags: {' '.join(flags)}")
    for threads in (int(t) for t in args.threads.split(",") if t):
        entry = Cache(root).entry("roofline", host_spec(threads), "")
        if args.fresh and entry.exists():
            shutil.rmtree(entry)
        roof = load_or_measure(root, threads)
        print(f"\n{roof.cpu}, {threads} threads (cache {entry}); load {os.getloadavg()}")
        for dtype, peak in roof.peaks.items():
            ridge = peak / roof.memory_gbs if roof.memory_gbs else float("nan")
            print(
                f"  {dtype:9s} peak {peak:8.1f} GFLOP/s  ridge {ridge:7.1f} flop/byte (memory)  "
                f"[{roof.how.get(dtype, '')}]"
            )
        for level, gbs in roof.bandwidth.items():
            print(f"  bandwidth {level:6s} {gbs:8.1f} GB/s  [{roof.how.get('bandwidth', '')}]")
        print(f"  L2 of the threads: {roof.cache_bytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
