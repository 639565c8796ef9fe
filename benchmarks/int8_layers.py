"""Single int8 conv layers: the two AMX forms against the VNNI kernels (not a test: a table).

    python benchmarks/int8_layers.py                       # the layers of the README's figures
    python benchmarks/int8_layers.py --layers 64,56,64,3,1,1 256,14,256,3,1,1

A layer is ``C,H,OC,K,stride,pad`` (batch 1, square, uint8 data, int8 weights, int32 out).
Systems: ``gemm`` (AMX: the wide-layer form, ``dlas/algorithms/amx_direct.py``, where it
applies), ``gemm_first_form`` (AMX, ``amx.py`` only: the wide form switched off),
``spatial_pack`` and ``direct`` (VNNI). All are built in one process, checked equal, and timed
round-robin (``--rounds`` rounds of ``time_evaluator`` over ``--number`` calls, 2 threads);
medians, and each system's speed relative to ``spatial_pack``. Without AMX-INT8 both ``gemm``
rows run the CPU's other int8 kernel.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from dlas.algorithms import amx_direct, lower  # noqa: E402
from dlas.algorithms.shapes import ConvSpec  # noqa: E402
from dlas.algorithms.timing import conv_module  # noqa: E402
from dlas.compiler.build import build  # noqa: E402
from dlas.devices.local_cpu import host_target  # noqa: E402

LAYERS = [
    "64,56,64,3,1,1", "128,28,128,3,1,1", "256,14,256,3,1,1", "512,7,512,3,1,1",
    "64,224,64,3,1,1", "128,28,128,3,2,1", "64,56,128,1,2,0", "24,16,144,1,1,0",
    "3,224,64,3,1,1", "3,224,64,7,2,3", "3,32,32,3,1,1",
]  # fmt: skip


def spec_of(layer: str) -> ConvSpec:
    c, h, oc, k, s, p = (int(v) for v in layer.split(","))
    return ConvSpec(1, c, h, h, oc, k, k, (s, s), (p, p, p, p), (1, 1), 1, "uint8", "int32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", default=LAYERS)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--number", type=int, default=20)
    args = parser.parse_args()
    target = host_target(2)
    dev = tvm.cpu()
    print(f"target {target.mcpu}, 2 threads, median of {args.rounds} rounds x {args.number}")
    for layer in args.layers:
        spec = spec_of(layer)
        rng = np.random.default_rng(0)
        weight = rng.integers(-127, 128, spec.weight_shape).astype("int8")
        x = tvm.runtime.tensor(
            rng.integers(0, 256, (1, spec.in_channels, spec.height, spec.width)).astype("uint8"),
            dev,
        )

        def vm(algorithm: str, spec=spec, weight=weight) -> relax.VirtualMachine:
            executable = build(lower(conv_module(spec, weight), algorithm, target).mod, target)
            return relax.VirtualMachine(executable, dev)

        vms = {"gemm": vm("gemm")}
        applies, amx_direct.applies = amx_direct.applies, lambda *_: False
        try:
            vms["gemm_first_form"] = vm("gemm")
        finally:
            amx_direct.applies = applies
        vms["spatial_pack"], vms["direct"] = vm("spatial_pack"), vm("direct")
        ref = vms["spatial_pack"]["main"](x).numpy()
        for name, machine in vms.items():
            np.testing.assert_array_equal(machine["main"](x).numpy(), ref, err_msg=name)
        times: dict[str, list[float]] = {name: [] for name in vms}
        for _ in range(args.rounds):
            for name, machine in vms.items():
                timer = machine.time_evaluator("main", dev, number=args.number, repeat=1)
                times[name].append(timer(x).results[0] * 1e3)
        medians = {name: statistics.median(t) for name, t in times.items()}
        base = medians["spatial_pack"]
        cells = "  ".join(f"{n} {ms:.4f} ms (x{base / ms:.2f})" for n, ms in medians.items())
        print(f"{layer:18s} {cells}  load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
