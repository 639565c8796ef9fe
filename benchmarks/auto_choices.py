"""How stable ``algorithm=auto``'s per-layer choices are: every conv layer chosen afresh several
times (nothing cached), under each timing protocol, and how often two choosings disagree.

    PYTHONPATH=. python benchmarks/auto_choices.py --models resnet18@32 --choosings 4 \\
        --rounds 1 5

``--rounds 1`` times a layer's candidates one after the other (dlas before CHOICES_VERSION
12); ``5``, dlas's default, in five turns of each candidate's calls. The protocols' choosings
alternate, so that a drift in the machine's speed reaches both. Printed per model and
protocol: the layer pairs (two choosings, one layer) whose choices differ, out of all pairs,
then each disagreement with both choosings' candidate times (ms), and the load average.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import tvm
from peers import prepare

from dlas.algorithms import lower
from dlas.algorithms.auto import Auto
from dlas.compiler.export import export
from dlas.devices.local_cpu import host_target


def choose(mod: tvm.IRModule, target: tvm.target.Target, repeat: int, rounds: int) -> list[dict]:
    """Each timed conv layer's choice and its candidates' times, chosen without a cache. The
    per-layer choice alone: the whole-model race against blocked would replace every row
    of a choosing it loses with blocked's."""
    auto = Auto(repeat=repeat, rounds=rounds, graph_candidates=[])
    with target:
        lowered = lower(mod, auto, target, schedule=False)
    return [
        {
            "layer": f"{i}:{row['weight_shape']}",
            "algorithm": row["algorithm"],
            "times": row["candidates"],
        }
        for i, row in enumerate(lowered.layers)
        if row.get("candidates")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18@32"], help="name@px")
    parser.add_argument("--choosings", type=int, default=4, help="per protocol (>= 2)")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per candidate")
    args = parser.parse_args()
    if args.choosings < 2:
        parser.error("--choosings: at least 2, to have a pair to compare")
    target = host_target()
    print(f"target: {target}")
    for model_at in args.models:
        name, px = model_at.split("@")
        model, spec, _ = prepare(name, int(px))
        mod = export(model, spec)
        chosen: dict[int, list[list[dict]]] = {r: [] for r in args.rounds}
        for n in range(args.choosings):
            for rounds in args.rounds:
                start = time.perf_counter()
                chosen[rounds].append(choose(mod, target, args.repeat, rounds))
                print(
                    f"# {model_at} rounds={rounds} choosing {n + 1}: "
                    f"{time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        for rounds, runs in chosen.items():
            pairs = list(itertools.combinations(range(len(runs)), 2))
            differ = [
                (a, b, row_a, row_b)
                for a, b in pairs
                for row_a, row_b in zip(runs[a], runs[b], strict=True)
                if row_a["algorithm"] != row_b["algorithm"]
            ]
            total = len(pairs) * len(runs[0])
            print(f"\n{model_at} rounds={rounds}: {len(differ)} of {total} layer pairs differ")
            for a, b, row_a, row_b in differ:
                print(
                    f"  {row_a['layer']}  #{a + 1}: {row_a['times']}  |  #{b + 1}: {row_b['times']}"
                )
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
