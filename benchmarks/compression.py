"""Accuracy and untuned latency of every compression option on the embedded digits dataset.

    nice -n 10 python benchmarks/compression.py [--models resnet18 mobilenet_v2]
        [--algorithms direct gemm] [--timed-runs 30] [--cache-dir .cache/dlas]
        [--override dataset.train.epochs=1 dataset.test_limit=100]

Each cell is one real ``dlas.pipeline.run`` (one MLflow run): accuracy of the compiled TVM
module on the digits test split (360 images) and its median batch-1 latency (``ms``). At the
end every built library is timed again round-robin in one process (``re-timed``): same load
for all, so those are the figures to compare with each other. Dense runs go
first so that every compressed run's ``accuracy/drop_vs_dense`` uses the compiled dense
accuracy. Trained and compressed checkpoints and built libraries are cached, so a rerun only
measures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _libraries import retime, run_one

COMPRESSIONS = {
    "dense": [],
    "weight_pruning 50%": ["compression=weight_pruning", "compression.amount=0.5"],
    "weight_pruning 90%": ["compression=weight_pruning", "compression.amount=0.9"],
    "channel_pruning 50%": ["compression=channel_pruning", "compression.amount=0.5"],
    "fp16": ["compression=fp16"],
    "int8": ["compression=int8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--algorithms", nargs="+", default=["direct", "gemm"])
    parser.add_argument("--compressions", nargs="+", default=list(COMPRESSIONS))
    parser.add_argument("--timed-runs", type=int, default=30)
    parser.add_argument("--cache-dir", default=".cache/dlas")
    parser.add_argument("--mlruns-dir", default="mlruns")
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        help="override compression.finetune_epochs of the pruning rows (0: latency only)",
    )
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra overrides for every run, e.g. dataset.train.epochs=1",
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    from dlas.algorithms import ALGORITHMS
    from dlas.config import register_schemas

    register_schemas()
    algorithms = [a for a in args.algorithms if a in ALGORITHMS]
    rows = []
    libraries: dict[tuple[str, str, str], Path] = {}
    for model in args.models:
        for label in args.compressions:
            row = {"model": model, "compression": label}
            for algorithm in algorithms:
                overrides = [
                    "dataset=digits",
                    f"model={model}",
                    f"algorithm.name={algorithm}",
                    f"device.timed_runs={args.timed_runs}",
                    "eval.eager_baseline=false",
                    f"paths.cache_dir={args.cache_dir}",
                    f"paths.mlruns_dir={args.mlruns_dir}",
                    *args.override,
                    *COMPRESSIONS[label],
                ]
                if args.finetune_epochs is not None and "pruning" in label:
                    overrides.append(f"compression.finetune_epochs={args.finetune_epochs}")
                start = time.perf_counter()
                m, library = run_one(overrides)
                if library is not None:
                    libraries[(model, label, algorithm)] = library
                row[f"top1 {algorithm}"] = 100 * m["accuracy/top1"]
                row[f"ms {algorithm}"] = m["latency/median_ms"]
                row.setdefault("drop", m.get("accuracy/drop_vs_dense", 0.0))
                row.setdefault("macs M", m["model/macs"] / 1e6)
                row.setdefault("sparsity", m["model/sparsity"])
                print(
                    f"# {model} {label} {algorithm}: {time.perf_counter() - start:.0f} s",
                    flush=True,
                )
            rows.append(row)

    print(f"\nload average after the runs: {os.getloadavg()}")
    retimed = retime(libraries, digits_input())
    for row in rows:
        for algorithm in algorithms:
            key = (row["model"], row["compression"], algorithm)
            row[f"re-timed {algorithm}"] = retimed.get(key, float("nan"))
    cols = ["model", "compression", "drop", "macs M", "sparsity"] + [
        f"{k} {a}" for a in algorithms for k in ("top1", "ms", "re-timed")
    ]
    print(f"load average after re-timing: {os.getloadavg()}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def digits_input() -> object:
    from dlas.config.schema import DatasetConfig
    from dlas.data import load_dataset

    data = load_dataset(DatasetConfig(name="digits", mean=[0.2] * 3, std=[0.3] * 3))
    return next(iter(data.test_loader(batch_size=1)))[0].numpy()


if __name__ == "__main__":
    main()
