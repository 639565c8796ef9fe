"""Per-kernel profile of one model's untuned dlas build (the table every TVM run logs).

    python benchmarks/profile_model.py efficientnet_b0@224 --algorithm direct --top 25
    python benchmarks/profile_model.py resnet18@224 --algorithm spatial_pack --compression bf16

Random weights; 2 threads (TVM_NUM_THREADS). Columns: time per model call, share, achieved
GFLOP/s (TIR estimate: 2 x MACs + epilogue), GB/s over the kernel's arguments, flop per
argument byte, and whether the host's roofline calls it compute- or memory-bound.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

THREADS = int(os.environ.setdefault("TVM_NUM_THREADS", "2"))

import tvm  # noqa: E402
from peers import prepare  # noqa: E402
from tvm import relax  # noqa: E402

from dlas.algorithms import lower  # noqa: E402
from dlas.compiler.build import build  # noqa: E402
from dlas.compiler.export import export  # noqa: E402
from dlas.compression import COMPRESSIONS  # noqa: E402
from dlas.devices.local_cpu import host_target  # noqa: E402
from dlas.devices.roofline import load_or_measure  # noqa: E402
from dlas.profile import kernel_costs, profile_kernels, profile_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="name@px, e.g. mobilenet_v2@224")
    parser.add_argument("--algorithm", default="direct")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--compression", choices=("fp32", "int8", "bf16", "fp16"), default="fp32")
    parser.add_argument("--cache-dir", default=".cache/dlas")
    args = parser.parse_args()
    name, size = args.model.split("@")
    model, spec, x = prepare(name, int(size))
    target = host_target(THREADS)
    roofline = load_or_measure(Path(args.cache_dir), THREADS, target)
    mod = export(model, spec)
    if args.compression != "fp32":
        import torch
        from low_precision import compressed

        mod = compressed(mod, args.compression, model, [torch.from_numpy(x)])
    lowered = lower(mod, args.algorithm, target)
    costs = kernel_costs(lowered.mod)
    executable = build(lowered.mod, target)
    dev = tvm.cpu()
    kernels = profile_kernels(relax.VirtualMachine(executable, dev), dev, x, args.repeat)
    # The roofline peak of the dtype the compression computes in ("fp32" is dlas's "dense").
    name = "dense" if args.compression == "fp32" else args.compression
    dtype = COMPRESSIONS.get(name).compute_dtypes[0]
    peak = roofline.peak(dtype)
    table = profile_table(kernels, costs, peak, roofline.bandwidth_for)
    total = sum(table["ms"])
    print(
        f"{args.model} {args.algorithm} {args.compression}: {total:.2f} ms in {len(kernels)} "
        f"kernels; {dtype} peak {peak or float('nan'):.0f} G(FL)OP/s, {roofline.bandwidth} GB/s; "
        f"load {os.getloadavg()}"
    )
    cols = ["ms", "share", "gflops", "gbs", "flop_per_byte", "bound", "of_roofline", "calls"]
    print(f"{'kernel':60s} " + " ".join(f"{c:>8s}" for c in cols))
    for i in range(min(args.top, len(table["kernel"]))):
        cells = [table[c][i] for c in cols]
        print(f"{table['kernel'][i][:60]:60s} " + " ".join(f"{str(c):>8s}" for c in cells))
    # Per bound: its time, and its kernels' fraction of their roofline weighted by their time
    # (for the compute-bound ones: their GFLOP/s together over the peak).
    by_bound: dict[str, list[float]] = {}
    for bound, ms, fraction in zip(table["bound"], table["ms"], table["of_roofline"], strict=True):
        spent = by_bound.setdefault(str(bound), [0.0, 0.0])
        spent[0] += ms
        spent[1] += ms * float(fraction)
    for bound, (ms, weighted) in by_bound.items():
        print(f"{bound}-bound kernels: {ms:.2f} ms, {weighted / ms:.1%} of their roofline")


if __name__ == "__main__":
    main()
