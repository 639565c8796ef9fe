"""How often ``algorithm=auto``'s whole-model race picks the slower lowering: its per-layer
choice and blocked, each built once, raced again and again with each race size, the sizes
taking turns.

    PYTHONPATH=. python benchmarks/auto_race.py --models vgg16@32 --races 16 --sizes 20x5 100x25

A size is calls x rounds; dlas races with ``RACE_SCALE`` times a layer's (100 calls in 25
rounds by default). Printed per model: each race's ratio (per-layer / blocked), then per
size how many races picked the lowering that is slower by the median ratio of all races, the
range of the ratios, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import tvm
from peers import prepare
from tvm import relax

from dlas.algorithms import lower
from dlas.algorithms.auto import Auto, time_vms
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.devices.local_cpu import resolve_target_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16@32"], help="name@px")
    parser.add_argument("--races", type=int, default=16, help="per size")
    parser.add_argument("--sizes", nargs="+", default=["20x5", "100x25"], help="calls x rounds")
    parser.add_argument("--cache-dir", default=None, help="auto's per-layer choices")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    target = tvm.target.Target(resolve_target_dict({"kind": "llvm", "mcpu": "auto"}, None))
    dev = tvm.cpu()
    print(f"target: {target}")
    for model_at in args.models:
        name, px = model_at.split("@")
        model, spec, x = prepare(name, int(px))
        mod = export(model, spec)
        per_layer = Auto(cache_dir=args.cache_dir, graph_candidates=[])
        vms = {}
        for label, algorithm in (("per-layer", per_layer), ("blocked", "blocked")):
            vms[label] = relax.VirtualMachine(build(lower(mod, algorithm, target).mod, target), dev)
            vms[label].set_input("main", tvm.runtime.tensor(np.asarray(x), dev))
        ratios: dict[tuple[int, int], list[float]] = {size: [] for size in sizes}
        for race in range(args.races):
            for calls, rounds in sizes:
                times = time_vms(vms, calls, rounds)
                ratios[(calls, rounds)].append(times["per-layer"] / times["blocked"])
            line = "  ".join(f"{c}x{r} {ratios[(c, r)][-1]:.3f}" for c, r in sizes)
            print(
                f"# {model_at} race {race + 1}: {line}, load {os.getloadavg()[0]:.2f}", flush=True
            )
        faster_is_blocked = statistics.median(sum(ratios.values(), [])) > 1
        for (calls, rounds), values in ratios.items():
            wrong = sum((value > 1) != faster_is_blocked for value in values)
            print(
                f"{model_at} {calls}x{rounds}: {wrong} of {len(values)} races picked the slower "
                f"({'per-layer' if faster_is_blocked else 'blocked'}); per-layer/blocked "
                f"{min(values):.3f}-{max(values):.3f}"
            )
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
