"""Does guided search pay? Runs needed to reach a configuration within 5% of the best feasible
latency (accuracy drop <= 1 point vs the dense model), TPE vs random sampling, replayed on the
results of one exhaustive sweep.

1. The exhaustive sweep, for real (long; every valid configuration of the experiment once):

       nice -n 10 python -m dlas.run -m +experiment=digits_slice hydra.sweeper.sampler=grid \\
           hydra.sweeper.study_name=digits_slice_grid

2. The replay (seconds): the guided sweeper's own loop (conditional sampling, duplicates, dense
   baselines), its runs answered from the exhaustive sweep's MLflow runs:

       python benchmarks/search.py --experiment digits_slice --study digits_slice_grid --seeds 10
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna

from dlas.config import register_schemas
from dlas.search.replay import (
    RecordedOracle,
    ReplaySweep,
    TargetReached,
    ground_truth,
    load_runs,
)
from dlas.search.sweeper import SweeperSettings


def experiment_space(name: str, overrides: list[str]) -> tuple[list[str], list[Any], Any]:
    """The experiment's search space (and sweeper settings), composed as ``-m`` would."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from dlas.search.space import parse_space

    register_schemas()
    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"+experiment={name}", *overrides], return_hydra_config=True
        )
        loader = GlobalHydra.instance().config_loader()
        fixed, params = parse_space(
            [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()], loader
        )
    return fixed, params, cfg


def replay(
    sampler: str,
    seed: int,
    records: list[Any],
    params: list[Any],
    target: float,
    truth: dict[str, Any],
    n_startup: int,
    max_drop: float,
) -> int | None:
    settings = SweeperSettings(
        sampler=sampler,
        seed=seed,
        n_trials=20 * len(records),
        n_startup_trials=n_startup,
        objective="latency",
    )
    sweep = ReplaySweep(settings, records, target, truth, max_drop)
    try:
        sweep.explore([], params, RecordedOracle(records), None, f"replay-{sampler}-{seed}")
    except TargetReached as hit:
        return int(hit.args[0])
    return None  # the space ran out first (only if the best configuration failed to replay)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="digits_slice")
    ap.add_argument(
        "--study",
        default="digits_slice_grid",
        help="study name of the exhaustive sweep (hydra.sweeper.study_name)",
    )
    ap.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: sqlite:///<paths.mlruns_dir>/mlflow.db)",
    )
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument(
        "--max-drop",
        type=float,
        default=None,
        help="accuracy-drop limit (default: the experiment's max_accuracy_drop)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the experiment")
    args = ap.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("dlas").setLevel(logging.WARNING)
    _, params, cfg = experiment_space(args.experiment, args.overrides)
    uri = (
        args.tracking_uri
        or f"sqlite:///{Path(cfg.paths.mlruns_dir).expanduser().resolve() / 'mlflow.db'}"
    )
    max_drop = (
        args.max_drop
        if args.max_drop is not None
        else cfg.hydra.callbacks.dlas_sweep.max_accuracy_drop
    )
    records = load_runs(uri, args.study, params)
    if not records:
        sys.exit(f"no runs of study {args.study!r} in {uri}: run the exhaustive sweep first")
    best, truth = ground_truth(records, max_drop)
    target = best * (1 + args.tolerance)
    good = sum(1 for lat, ok in truth.values() if ok and lat <= target)
    n = len(records)

    rows = []
    for seed in range(args.seeds):
        rows.append(
            {
                "seed": seed,
                **{
                    s: replay(
                        s,
                        seed,
                        records,
                        params,
                        target,
                        truth,
                        cfg.hydra.sweeper.n_startup_trials,
                        max_drop,
                    )
                    for s in ("tpe", "random")
                },
            }
        )

    def med(key: str) -> float:
        return statistics.median(r[key] if r[key] is not None else n for r in rows)

    result = {
        "experiment": args.experiment,
        "study": args.study,
        "exhaustive_runs": n,
        "finished_runs": len(truth),
        "feasible": sum(ok for _, ok in truth.values()),
        "best_feasible_latency_ms": best,
        "within_tolerance": good,
        "rows": rows,
        "median_tpe": med("tpe"),
        "median_random": med("random"),
        "uniform_random_expectation": (n + 1) / (good + 1),
    }
    print(
        f"exhaustive sweep {args.study!r}: {n} runs ({len(truth)} finished, "
        f"{result['feasible']} within {max_drop:g} pt of dense accuracy); best feasible "
        f"latency {best:.4g} ms; {good} configuration(s) within {args.tolerance:.0%} of it"
    )
    print("| seed | TPE runs needed | random runs needed |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['tpe']} | {r['random']} |")
    print(
        f"| median | {result['median_tpe']:g} ({result['median_tpe'] / n:.0%} of {n}) | "
        f"{result['median_random']:g} ({result['median_random'] / n:.0%}) |"
    )
    print(
        f"uniform random without replacement would need {result['uniform_random_expectation']:.1f}"
        " runs on average"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
