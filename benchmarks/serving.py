"""A logged dlas model in use: load-and-predict in a fresh process, and ``mlflow models serve``
latency per request at batch 1 against the same model called in-process (not a test: figures).

    python benchmarks/serving.py                      # logs one tiny_cnn run into a temp store
    python benchmarks/serving.py --model resnet18 --requests 100
    python benchmarks/serving.py --run-id <id> --tracking-uri sqlite:///mlruns/mlflow.db

Fresh process: wall time of ``python -c`` that imports MLflow, loads ``runs:/<id>/model`` and
predicts one image, and (printed by the child) the part after interpreter start. Serving: one
``mlflow models serve --env-manager local`` worker on a loopback port; each round sends one
batch-1 request over HTTP (JSON ``{"inputs": ...}``) and makes one in-process ``predict`` call,
interleaved so that both see the same machine load; medians over ``--requests`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dlas, as the child processes get it

CHILD = """
import time
start = time.perf_counter()
import mlflow, numpy as np
model = mlflow.pyfunc.load_model("runs:/{run_id}/model")
loaded = time.perf_counter()
model.predict(np.zeros({shape}, dtype=np.float32))
print(loaded - start, time.perf_counter() - loaded)
"""


def log_run(model: str, root: Path) -> tuple[str, str]:
    import mlflow
    from hydra import compose, initialize_config_module

    from dlas import pipeline
    from dlas.config import register_schemas
    from dlas.tracking import tracking_uri

    register_schemas()
    overrides = [
        f"model={model}",
        "dataset.train.epochs=1",
        "dataset.test_limit=16",
        "device.timed_runs=5",
        "eval.eager_baseline=false",
        f"paths.cache_dir={root / 'cache'}",
        f"paths.mlruns_dir={root / 'mlruns'}",
    ]
    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    pipeline.run(cfg)
    return mlflow.last_active_run().info.run_id, tracking_uri(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_cnn")
    parser.add_argument("--run-id")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--fresh", type=int, default=3, help="fresh-process repetitions")
    args = parser.parse_args()

    import mlflow

    from dlas.serving.server import invoke, serve

    tmp = Path(tempfile.mkdtemp(prefix="dlas-serving-"))
    if args.run_id:
        run_id, uri = args.run_id, args.tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
    else:
        run_id, uri = log_run(args.model, tmp)
    mlflow.set_tracking_uri(uri)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    model_uri = f"runs:/{run_id}/model"
    model = mlflow.pyfunc.load_model(model_uri)
    shape = tuple(
        json.loads(mlflow.artifacts.load_text(f"{model_uri}/data/input_spec.json"))["shape"]
    )
    print(f"model {model_uri} input {shape}; loadavg before {os.getloadavg()}")

    walls, loads, predicts = [], [], []
    for _ in range(args.fresh):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(run_id=run_id, shape=shape)],
            env=env, cwd=tmp, capture_output=True, text=True, check=True,
        )  # fmt: skip
        walls.append(time.perf_counter() - start)
        load, predict = map(float, out.stdout.split()[-2:])
        loads.append(load)
        predicts.append(predict)
    print(
        f"fresh process, median of {args.fresh}: wall {statistics.median(walls):.2f} s "
        f"(import mlflow + load {statistics.median(loads):.2f} s, first predict "
        f"{statistics.median(predicts) * 1e3:.1f} ms); loadavg {os.getloadavg()}"
    )

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    served_ms, local_ms = [], []
    with serve(model_uri, env=env, log_path=tmp / "serve.log") as url:
        for _ in range(3):  # warm-up both paths
            invoke(url, x)
            model.predict(x)
        for _ in range(args.requests):
            start = time.perf_counter()
            invoke(url, x)
            served_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            model.predict(x)
            local_ms.append((time.perf_counter() - start) * 1e3)
    served, local = statistics.median(served_ms), statistics.median(local_ms)
    print(
        f"batch 1, median of {args.requests} interleaved rounds: mlflow models serve "
        f"{served:.2f} ms per request (p90 {np.percentile(served_ms, 90):.2f}); in-process "
        f"pyfunc predict {local:.3f} ms (p90 {np.percentile(local_ms, 90):.3f}); HTTP + JSON "
        f"overhead {served - local:.2f} ms; loadavg {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
