"""How often ``algorithm=auto``'s whole-model race picks a slower lowering: its per-layer
choice and each whole-graph layout it races (blocked with its own kernels, and with timed
ones), each built once, raced again and again with each race size, the sizes taking turns.

    PYTHONPATH=. python benchmarks/auto_race.py --models vgg16@32 --races 16 --sizes 20x5 100x25

A size is calls x rounds; dlas races with ``RACE_SCALE`` times a layer's (100 calls in 25
rounds by default), each block after ``dlas.measure.WARMUP_S`` of untimed calls, as the run
times its latency. Printed per race: each lowering's median; then per size how many races
picked another lowering than the fastest by the median of all races, what the worst such pick
costs (its median over the fastest's), and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import tvm
from peers import prepare

from dlas.algorithms import lower
from dlas.algorithms.auto import Auto
from dlas.algorithms.timing import time_runners
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.devices.local_cpu import TVMRunner, host_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16@32"], help="name@px")
    parser.add_argument("--races", type=int, default=16, help="per size")
    parser.add_argument("--sizes", nargs="+", default=["20x5", "100x25"], help="calls x rounds")
    parser.add_argument("--cache-dir", default=None, help="auto's per-layer choices")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    target = host_target()
    dev = tvm.cpu()
    print(f"target: {target}")
    for model_at in args.models:
        name, px = model_at.split("@")
        model, spec, x = prepare(name, int(px))
        mod = export(model, spec)
        per_layer = Auto(cache_dir=args.cache_dir, graph_candidates=[])
        lowerings = {"per-layer": per_layer, **Auto(cache_dir=args.cache_dir).graph_layouts()}
        with target:
            runners = {
                label: TVMRunner(build(lower(mod, algorithm, target).mod, target), dev)
                for label, algorithm in lowerings.items()
            }
        picks: dict[tuple[int, int], list[str]] = {size: [] for size in sizes}
        medians: dict[str, list[float]] = {label: [] for label in runners}
        for race in range(args.races):
            line = []
            for calls, rounds in sizes:
                times = time_runners(runners, np.asarray(x), calls, rounds)
                picks[(calls, rounds)].append(min(times, key=times.__getitem__))
                for label, ms in times.items():
                    medians[label].append(ms)
                line.append(
                    f"{calls}x{rounds} " + " ".join(f"{k} {v:.3f}" for k, v in times.items())
                )
            print(f"# {model_at} race {race + 1}: {'; '.join(line)}, load {os.getloadavg()[0]:.2f}")
        typical = {label: statistics.median(values) for label, values in medians.items()}
        fastest = min(typical, key=typical.__getitem__)
        print(f"{model_at} medians: " + ", ".join(f"{k} {v:.3f} ms" for k, v in typical.items()))
        for (calls, rounds), picked in picks.items():
            wrong = [p for p in picked if p != fastest]
            cost = max((typical[p] / typical[fastest] for p in wrong), default=1.0)
            print(
                f"{model_at} {calls}x{rounds}: {len(wrong)} of {len(picked)} races picked another "
                f"than {fastest}; the worst pick ran x{cost:.3f} its time"
            )
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
