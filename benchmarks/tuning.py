"""Untuned vs MetaSchedule-tuned latency per conv algorithm, against PyTorch eager,
torch.compile and ONNX Runtime, at batch 1.

    nice -n 10 python benchmarks/tuning.py [--models resnet18 mobilenet_v2] [--size 32]
        [--algorithms direct gemm spatial_pack] [--trials 1024] [--tuned-algorithms [direct]]
        [--baselines pytorch torch_compile onnxruntime] [--timed-runs 50]
        [--dataset synthetic] [--cache-dir .cache/dlas-bench] [--override device.num_threads=1]
        [--reuse-check] [--json out.json]

Every cell is one real ``dlas.pipeline.run`` (one MLflow run), measured with the pipeline's
latency protocol. At the end the TVM libraries of every cell are timed again round-robin in
one process (``re-timed ms``; ``x re-timed`` is untuned direct's re-timed figure over the
cell's): the ratios to quote, since each cell's own figure saw a different machine load.
A 20-minute budget: ``--trials 100000 --tuning tuning.max_seconds=1200``. Tuning records go to the shared database under ``--cache-dir``, so a rerun
with the same budget tunes nothing. ``--reuse-check`` then repeats each tuned run with its
built library removed from the compile cache: the run must rebuild through the tuner and take
every record from the database (``tune/new_trials`` 0). Timings on a shared machine are noisy:
the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from _libraries import library_of, retime, run_one


def drop_compiled(library: Path | None) -> None:
    """Remove a built library's entry from the compile cache (the tuning records stay)."""
    if library is not None:
        shutil.rmtree(library.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--compression", default="dense")
    parser.add_argument("--algorithms", nargs="+", default=["direct", "gemm", "spatial_pack"])
    parser.add_argument(
        "--tuned-algorithms",
        nargs="*",
        default=None,
        help="algorithms to tune (default: all of --algorithms; none if empty)",
    )
    parser.add_argument("--trials", type=int, default=1024)
    parser.add_argument(
        "--tuning",
        nargs="*",
        default=[],
        help="extra tuning.* overrides, e.g. tuning.trials_per_iter=32",
    )
    parser.add_argument(
        "--baselines", nargs="*", default=["pytorch", "torch_compile", "onnxruntime"]
    )
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--timed-runs", type=int, default=50)
    parser.add_argument("--cache-dir", default=".cache/dlas-bench")
    parser.add_argument("--mlruns-dir", default="mlruns")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra overrides for every run, e.g. device.num_threads=1",
    )
    parser.add_argument("--reuse-check", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    from dlas.algorithms import ALGORITHMS
    from dlas.config import register_schemas

    register_schemas()
    algorithms = [a for a in args.algorithms if a in ALGORITHMS]
    wanted = algorithms if args.tuned_algorithms is None else args.tuned_algorithms
    tuned_algorithms = [a for a in wanted if a in ALGORITHMS]
    common = [
        f"dataset={args.dataset}",
        f"dataset.image_size={args.size}",
        f"compression={args.compression}",
        f"device.timed_runs={args.timed_runs}",
        "tracking.log_library=false",
        f"paths.cache_dir={args.cache_dir}",
        f"paths.mlruns_dir={args.mlruns_dir}",
        *args.override,
    ]
    tune = ["tuning=metaschedule", f"tuning.trials={args.trials}", *args.tuning]
    rows: list[dict] = []
    libraries: dict[tuple[str, str], Path] = {}

    def cell(model: str, label: str, overrides: list[str]) -> dict[str, float]:
        start = time.perf_counter()
        m, library = run_one([f"model={model}", *common, *overrides])
        if library is not None:
            libraries[(model, label)] = library
        row = {
            "model": model,
            "config": label,
            "ms": m["latency/median_ms"],
            "eager ms": m.get("latency/pytorch_eager_median_ms"),
            "tune s": m.get("tune/seconds"),
            "trials": m.get("tune/trials"),
            "new trials": m.get("tune/new_trials"),
            "run s": time.perf_counter() - start,
            "load": os.getloadavg()[0],
        }
        rows.append(row)
        print(
            f"# {model} {label}: {row['ms']:.2f} ms, {row['run s']:.0f} s, load {row['load']:.1f}",
            flush=True,
        )
        return m

    for model in args.models:
        for algorithm in algorithms:
            cell(model, f"untuned {algorithm}", [f"algorithm={algorithm}"])
        for algorithm in tuned_algorithms:
            cell(model, f"tuned {algorithm}", [f"algorithm={algorithm}", *tune])
            if args.reuse_check:
                with_cfg = run_cfg([f"model={model}", *common, f"algorithm={algorithm}", *tune])
                drop_compiled(library_of(with_cfg))
                cell(model, f"tuned {algorithm} (2nd run)", [f"algorithm={algorithm}", *tune])
        for baseline in args.baselines:
            cell(model, baseline, [f"tuning={baseline}"])

    print(f"\nload average before re-timing: {os.getloadavg()}")
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size))
    for key, ms in retime(libraries, x).items():
        row = next(r for r in rows if (r["model"], r["config"]) == key)
        row["re-timed ms"] = ms
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def run_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module("dlas.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def print_table(rows: list[dict]) -> None:
    print(f"\nload average now: {os.getloadavg()}")
    cols = [
        "model",
        "config",
        "ms",
        "re-timed ms",
        "x re-timed",
        "x vs untuned direct",
        "x vs eager",
        "eager ms",
        "tune s",
        "trials",
        "new trials",
        "run s",
        "load",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        untuned = next(
            (r for r in rows if r["model"] == row["model"] and r["config"] == "untuned direct"),
            {},
        )
        eager = next(
            (r["ms"] for r in rows if r["model"] == row["model"] and r["config"] == "pytorch"), None
        )
        base, retimed_base = untuned.get("ms"), untuned.get("re-timed ms")
        retimed = row.get("re-timed ms")
        row["x vs untuned direct"] = base / row["ms"] if base else None
        row["x re-timed"] = retimed_base / retimed if retimed_base and retimed else None
        row["x vs eager"] = eager / row["ms"] if eager else None
        cells = [
            ""
            if row.get(c) is None
            else f"{row[c]:.2f}"
            if isinstance(row[c], float)
            else str(row[c])
            for c in cols
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
