"""Wall time of one Optuna study run by 1, 2 and 4 workers on PostgreSQL + an MLflow server.

The services are started exactly as the scale-out tests start them (``tests/scaleout``):
a throw-away PostgreSQL cluster on loopback and ``mlflow server`` on it. The checkpoint the
trials share is trained once before any timing, so every row times the same work: ``--trials``
configurations of the tiny model on digits (24 by default, a 6 × 4 grid), each a fresh
process-level trial (compile, evaluate, measure under the host-CPU device lock, log).

    PYTHONPATH=. python benchmarks/scaleout.py [--workers 1,2,4] [--trials 24]

Prints one row per worker count: wall seconds, speed-up over one worker, trials complete,
distinct configurations, the sum of the trials' own durations (the work), and the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.scaleout import services  # noqa: E402
from tests.scaleout import workers as w  # noqa: E402

# 24 configurations: 6 warm-up counts × 4 comparison sample counts.
SPACE = ["device.warmup_runs=0,1,2,3,4,5", "eval.compare_samples=1,2,3,4"]


def study_command(root: Path, cache: Path, storage: str, study: str, n_trials: int) -> list[str]:
    cmd = w.optuna_command(root, cache, storage, study, f"hydra.sweeper.n_trials={n_trials}")
    return [a for a in cmd if a not in w.SPACE] + SPACE


def run_study(
    workers: int, n_trials: int, pg: services.Postgres, url: str, cache: Path, tmp: Path
) -> dict:
    import optuna
    from optuna.trial import TrialState

    study = f"bench{workers}"
    storage = pg.create_database(study)
    env = w.worker_env(url, tmp / "locks")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    procs, roots = [], []
    for i in range(workers):
        root = w.worker_root(tmp / study, i)
        roots.append(root)
        cmd = study_command(root, cache, storage, study, n_trials)
        procs.append(w.start(cmd, env, root / "worker.log", root))
    with w.killed_on_exit(*procs):
        codes = [p.wait(timeout=3600) for p in procs]
    wall = time.monotonic() - started
    if any(codes):
        bad = [r for r, c in zip(roots, codes, strict=True) if c]
        raise RuntimeError(f"workers failed: {(bad[0] / 'worker.log').read_text()[-3000:]}")
    trials = optuna.load_study(study_name=study, storage=storage).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return {
        "workers": workers,
        "wall_s": wall,
        "complete": len(done),
        "distinct": len({t.user_attrs["dlas.signature"] for t in done}),
        "trial_s": busy,
        "load": (load_before, os.getloadavg()[0]),
    }


def warm_cache(cache: Path, tmp: Path) -> None:
    """Train the shared checkpoint once, so that no row pays for it."""
    from tests.search.conftest import base_args

    root = tmp / "warm"
    root.mkdir(parents=True)
    cmd = [sys.executable, "-m", "dlas.run", *base_args(root, cache)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    reason = services.missing_reason()
    if reason:
        sys.exit(f"cannot start the services: {reason}")
    print(f"cores: {os.cpu_count()}  trials: {args.trials}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dlas-scaleout-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        warm_cache(cache, tmp)
        with services.postgres() as pg:
            backend = pg.create_database("mlflow").replace("postgresql://", "postgresql+psycopg://")
            with services.mlflow_server(backend, tmp / "artifacts", tmp / "server.log") as server:
                rows = []
                print(
                    f"{'workers':>7} {'wall s':>8} {'speed-up':>8} {'complete':>8} "
                    f"{'distinct':>8} {'sum of trials s':>15}  load before/after",
                    flush=True,
                )
                for n in (int(x) for x in args.workers.split(",")):
                    row = run_study(n, args.trials, pg, server.url, cache, tmp)
                    rows.append(row)
                    speedup = rows[0]["wall_s"] / row["wall_s"]
                    print(
                        f"{n:>7} {row['wall_s']:>8.0f} {speedup:>7.2f}× {row['complete']:>8} "
                        f"{row['distinct']:>8} {row['trial_s']:>15.0f}  "
                        f"{row['load'][0]:.1f}/{row['load'][1]:.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
