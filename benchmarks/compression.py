"""Accuracy and untuned latency of every compression option on the embedded digits dataset.

    nice -n 10 python benchmarks/compression.py [--models resnet18 mobilenet_v2]
        [--algorithms direct gemm] [--timed-runs 30] [--cache-dir .cache/dlas]

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

COMPRESSIONS = {
    "dense": [],
    "weight_pruning 50%": ["compression=weight_pruning", "compression.amount=0.5"],
    "weight_pruning 90%": ["compression=weight_pruning", "compression.amount=0.9"],
    "channel_pruning 50%": ["compression=channel_pruning", "compression.amount=0.5"],
    "fp16": ["compression=fp16"],
    "int8": ["compression=int8"],
}


def run_one(overrides: list[str]) -> tuple[dict[str, float], Path | None]:
    """One pipeline run: its metrics and the library it built (or found cached)."""
    from hydra import compose, initialize_config_module

    from dlas import pipeline

    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return pipeline.run(cfg), library_of(cfg)


def library_of(cfg) -> Path | None:
    """The cached library of this config: same checkpoint, compression and algorithm (the
    newest, if several targets or tunings match)."""
    from dataclasses import asdict

    from dlas.config import validate
    from dlas.models.train import checkpoint_spec

    typed = validate(cfg)
    want = {
        "checkpoint": json.loads(json.dumps(checkpoint_spec(typed.model, typed.dataset))),
        "compression": json.loads(json.dumps(asdict(typed.compression))),
        "algorithm": typed.algorithm.name,
        "tuning": typed.tuning.name,
    }
    found = []
    for spec_file in (Path(typed.paths.cache_dir) / "compiled").glob("*/spec.json"):
        spec = json.loads(spec_file.read_text())
        got = {
            "checkpoint": spec.get("checkpoint"),
            "compression": spec.get("compression"),
            "algorithm": spec.get("algorithm", {}).get("name"),
            "tuning": spec.get("tuning", {}).get("name"),
        }
        if got == want and (spec_file.parent / "model.so").exists():
            found.append(spec_file.parent / "model.so")
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def retime(libraries: dict[tuple[str, str, str], Path], rounds: int = 15) -> dict:
    """Median batch-1 latency (ms) of every library, timed round-robin in one process so
    that all of them see the same machine load (2 shared cores make run-to-run noise large)."""
    import numpy as np
    import tvm
    from tvm import relax

    from dlas.config.schema import DatasetConfig
    from dlas.data import load_dataset

    data = load_dataset(DatasetConfig(name="digits", mean=[0.2] * 3, std=[0.3] * 3))
    dev = tvm.cpu()
    x = tvm.runtime.tensor(next(iter(data.test_loader(batch_size=1)))[0].numpy(), dev)
    vms = {
        k: relax.VirtualMachine(tvm.runtime.load_module(str(p)), dev) for k, p in libraries.items()
    }
    samples: dict = {k: [] for k in vms}
    for vm in vms.values():
        vm["main"](x)  # warm-up
    for _ in range(rounds):
        for k, vm in vms.items():
            for _ in range(3):
                start = time.perf_counter()
                vm["main"](x)
                samples[k].append((time.perf_counter() - start) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


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
    retimed = retime(libraries)
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


if __name__ == "__main__":
    main()
