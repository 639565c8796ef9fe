"""What reaching a device through TVM RPC costs (not a test: figures).

    python benchmarks/devices.py                       # ResNet18-CIFAR, 32x32, 2 threads
    python benchmarks/devices.py --rounds 5 --repeat 100 --threads 1

1. Latency of one library run in this process (device=local_cpu) and through a loopback RPC
   tracker + server on this machine (device=rpc): the same library file, the same protocol
   (``--warmup`` calls, then ``--repeat`` timed ones with ``time_evaluator``, number=1), the same
   thread count on both sides. The two alternate for ``--rounds`` rounds so that a change in
   the machine's load hits both; the figure is the median over all samples, and the ratio.
2. Time to first result of a remote run: wall time of ``python -m dlas.run ... device=rpc``
   (a new process: imports, config, checks, MLflow run, upload, latency, accuracy) against
   the loopback server, first with a cold cache (it compiles) and then warm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from dlas.algorithms import lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.config import register_schemas, validate
from dlas.data import InputSpec
from dlas.devices import Program, create_device
from dlas.devices.loopback import tracker_with_server
from dlas.models import create_model

KEY = "dlas-bench"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def devices(tracker_port: int, threads: int):
    register_schemas()
    with initialize_config_module("dlas.conf", version_base="1.3"):
        local = compose("config", overrides=["device=local_cpu", f"device.num_threads={threads}"])
        remote = compose(
            "config",
            overrides=[
                "device=rpc",
                f"device.tracker=127.0.0.1:{tracker_port}",
                f"device.key={KEY}",
                f"device.num_threads={threads}",
            ],
        )
    return create_device(validate(local).device), create_device(validate(remote).device)


def library(model_name: str, size: int, device, path: Path) -> tuple[Path, float]:
    torch.manual_seed(0)
    spec = InputSpec(3, size, 10)
    model = create_model(model_name, 10, image_size=size)
    start = time.perf_counter()
    target = device.target
    lowered = lower(export(model, spec), "direct", target)
    device.export_library(build(lowered.mod, target), path)
    return path, time.perf_counter() - start


def time_on(device, program: Program, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
    with device.load(program) as runner:
        return runner.time(x, warmup=warmup, repeat=repeat)


def job_seconds(args: argparse.Namespace, tracker_port: int, cache: Path) -> float:
    overrides = [
        f"model={args.model}",
        "dataset.train.epochs=0",  # latency and plumbing only: an untrained checkpoint
        f"dataset.test_limit={args.test_limit}",
        "device=rpc",
        f"device.tracker=127.0.0.1:{tracker_port}",
        f"device.key={KEY}",
        f"device.num_threads={args.threads}",
        f"device.timed_runs={args.repeat}",
        f"paths.cache_dir={cache}",
        f"paths.mlruns_dir={cache / 'mlruns'}",
        f"hydra.run.dir={cache / 'outputs'}",
    ]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dlas.run", *overrides],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--test-limit", type=int, default=50)
    parser.add_argument("--skip-job", action="store_true", help="only the latency figure")
    args = parser.parse_args()
    # The local runtime's thread pool reads this when it starts; the server's gets it too.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="dlas-bench-devices-"))
    env = {"TVM_NUM_THREADS": str(args.threads)}
    print(f"before: {load()}", flush=True)
    try:
        with tracker_with_server(work, KEY, env) as (tracker, _):
            local, remote = devices(tracker.port, args.threads)
            remote.check_available()
            path, build_s = library(args.model, args.size, remote, work / "model.so")
            x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size))
            x = x.astype("float32")
            samples: dict[str, list[float]] = {"local": [], "rpc": []}
            for _ in range(args.rounds):
                samples["local"] += time_on(
                    local, local.load_library(path), x, args.warmup, args.repeat
                )
                samples["rpc"] += time_on(
                    remote, Program(library=str(path)), x, args.warmup, args.repeat
                )
            med = {k: statistics.median(v) for k, v in samples.items()}
            n = args.rounds * args.repeat
            print(
                f"{args.model} {args.size}x{args.size}, {args.threads} threads, built in {build_s:.1f} s"
            )
            print(f"  local_cpu (in process)   median {med['local']:8.3f} ms  ({n} runs)")
            print(f"  rpc (loopback tracker)   median {med['rpc']:8.3f} ms  ({n} runs)")
            print(f"  rpc / local              {med['rpc'] / med['local']:8.3f}")
            print(f"after latency: {load()}", flush=True)
            if not args.skip_job:
                cache = work / "cache"
                cold = job_seconds(args, tracker.port, cache)
                warm = job_seconds(args, tracker.port, cache)
                print(
                    f"dlas.run device=rpc model={args.model} (timed_runs={args.repeat}, "
                    f"{args.test_limit} test samples)"
                )
                print(f"  cold cache (compiles)    {cold:8.1f} s")
                print(f"  warm cache               {warm:8.1f} s   <- time to first result")
                print(f"after jobs: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)  # libraries, cache, server work folders


if __name__ == "__main__":
    main()
