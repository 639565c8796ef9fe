"""dlas's best untuned build per study model against PyTorch eager, torch.compile and ONNX Runtime.

    python benchmarks/peers.py                                   # the seven study models
    python benchmarks/peers.py --models mobilenet_v2@224,efficientnet_b0@224 --repeat 20
    python benchmarks/peers.py --algorithms direct,winograd --peers onnxruntime

Batch 1, random weights (batch-norm statistics exact over a few random batches, so that the
logits depend on the input and the check against PyTorch can fail), every system on the same
``--threads`` in this one process. The systems are timed round-robin: each round gives every
system 0.1 s of untimed calls (the previous system's idle workers spin for a while, and would
otherwise slow it) and then ``--calls`` timed ones; the figure is the median over all rounds,
and a row's notes give dlas/ort, and the fastest dlas build over the runner-up, each with its
95% interval from resampling whole rounds (``dlas.measure.speedup``). dlas = the fastest of its
untuned builds (one per algorithm, and ``auto``'s per-layer choice), each checked against
PyTorch. GFLOP/s are 2 x the model's MACs / median latency; "of peak" is against this host's
measured float32 roofline (dlas.devices.roofline, cached). The load average is printed with the
table: on a shared machine, compare ratios, not milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

# Before TVM starts its pool: the same thread count everywhere.
THREADS = int(os.environ.setdefault("TVM_NUM_THREADS", "2"))

import _libraries  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from dlas import measure  # noqa: E402
from dlas.algorithms import lower  # noqa: E402
from dlas.algorithms.auto import Auto  # noqa: E402
from dlas.compiler.build import build  # noqa: E402
from dlas.compiler.export import export  # noqa: E402
from dlas.config.schema import (  # noqa: E402
    DeviceConfig,
    OnnxRuntimeTuningConfig,
    TorchCompileTuningConfig,
    TuningConfig,
)
from dlas.data import InputSpec  # noqa: E402
from dlas.devices import create_device  # noqa: E402
from dlas.devices.local_cpu import host_target  # noqa: E402
from dlas.devices.roofline import load_or_measure  # noqa: E402
from dlas.models import create_model  # noqa: E402
from dlas.models.stats import count_macs  # noqa: E402
from dlas.models.train import recalibrate_batchnorm  # noqa: E402
from dlas.perf import model_gflops  # noqa: E402
from dlas.tuning import TuneContext, create_tuner  # noqa: E402

# The study: CIFAR variants at 32 px, ImageNet variants at 224 px (issue 17's table).
STUDY = [
    "resnet18@32",
    "mobilenet_v2@32",
    "vgg16@32",
    "resnet18@224",
    "mobilenet_v2@224",
    "efficientnet_b0@224",
    "resnet50@224",
    "densenet161@224",
]
# auto (each layer's fastest, timed per layer) is an untuned build too: on ResNet18-224 and
# ResNet50-224 it beat every single algorithm on Zen 3 (1.03x, 1.07x), and ran within 2% of
# blocked on Zen 4. Its first build times every layer (1-4 min); later runs reuse the times.
# blocked keeps activations in 16-channel blocks between layers (dlas/algorithms/blocked.py).
ALGORITHMS = ["direct", "spatial_pack", "blocked", "winograd", "gemm", "auto"]
PEERS = {
    "eager": TuningConfig(name="pytorch"),
    "compile": TorchCompileTuningConfig(name="torch_compile"),
    "ort": OnnxRuntimeTuningConfig(name="onnxruntime"),
}
PEER_NAMES = {"pytorch": "eager", "torch_compile": "compile", "onnxruntime": "ort"}


# The least relative change of the reference logits between two random inputs: below it a
# broken kernel could pass the relative-error check (see prepare).
MIN_REFERENCE_CHANGE = 1e-2


def prepare(name: str, size: int) -> tuple[torch.nn.Module, InputSpec, np.ndarray]:
    """Random weights and the exact batch-norm statistics of a few random batches, so that the
    logits depend on the input. With running averages of two batches, MobileNetV2's and
    EfficientNet-B0's logits moved by 1e-7 of their size between two inputs, and a build
    whose 24-channel convs read the wrong channels matched PyTorch to 2e-7."""
    torch.manual_seed(0)
    spec = InputSpec(3, size, 10)
    model = create_model(name, 10, image_size=size)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn((4, *spec.shape[1:]), generator=gen), None) for _ in range(3)]
    recalibrate_batchnorm(model, batches)
    model.eval()
    x, other = (torch.randn(spec.shape, generator=gen) for _ in range(2))
    with torch.no_grad():
        ref, moved = model(x).numpy(), model(other).numpy()
    change = float(np.abs(moved - ref).max() / np.abs(ref).max())
    if change < MIN_REFERENCE_CHANGE:
        raise RuntimeError(f"{name}@{size}: logits barely depend on the input ({change:.1e})")
    return model, spec, x.numpy()


def algorithm_for(name: str, cache_dir: str) -> str | Auto:
    """``name``'s algorithm; ``auto`` keeps its layer and whole-model times under
    ``cache_dir``, as a run does, so the table's next run reuses them rather than timing every
    layer again (ResNet50-224: 254 s)."""
    return Auto(cache_dir=cache_dir) if name == Auto.name else name


def tvm_system(model, spec, x, algorithm, target) -> tuple[Callable[[], None], float, float]:
    """(one inference, relative error vs PyTorch, build seconds)."""
    start = time.perf_counter()
    executable = build(lower(export(model, spec), algorithm, target).mod, target)
    seconds = time.perf_counter() - start
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    vm.set_input("main", tvm.runtime.tensor(x, dev))
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    while isinstance(out, tuple):
        out = out[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    err = float(np.abs(out.numpy() - ref).max() / np.abs(ref).max())
    return (lambda: vm.invoke_stateful("main")), err, seconds


def bench(entry: str, args, target, device, peak: float | None) -> dict:
    name, size = entry.split("@")
    model, spec, x = prepare(name, int(size))
    macs = count_macs(model, spec.shape)
    systems: dict[str, Callable[[], None]] = {}
    notes = []
    for algorithm in args.algorithms:
        try:
            chosen = algorithm_for(algorithm, args.cache_dir)
            fn, err, seconds = tvm_system(model, spec, x, chosen, target)
        except Exception as error:  # noqa: BLE001 - a failed build is a row note, not a stop
            notes.append(f"{algorithm}: {type(error).__name__}: {str(error)[:120]}")
            continue
        if err > 1e-4:
            notes.append(f"{algorithm}: rel err {err:.1e} > 1e-4, excluded")
            continue
        notes.append(f"{algorithm} built in {seconds:.0f}s, rel err {err:.0e}")
        systems[f"dlas:{algorithm}"] = fn
    ctx = TuneContext(device=device, work_dir=Path(args.work_dir))
    for peer in args.peers:
        try:
            program = create_tuner(PEERS[peer]).wrap(model, spec, ctx)
        except Exception as error:  # noqa: BLE001
            notes.append(f"{peer}: {type(error).__name__}: {str(error)[:120]}")
            continue
        function = program.function
        systems[peer] = lambda f=function: f(x)
    times = _libraries.round_robin(systems, args.repeat, args.calls)
    medians = {k: statistics.median(v) for k, v in times.items()}
    dlas = {k: v for k, v in medians.items() if k.startswith("dlas:")}
    best = min(dlas, key=dlas.get) if dlas else None
    if len(dlas) > 1:  # algorithm=auto's targets: beat, or come within 5% of, the others
        runner_up = sorted(dlas, key=dlas.__getitem__)[1]
        margin = measure.speedup(times[best], times[runner_up], args.calls)
        notes.append(f"{best[5:]} over {runner_up[5:]}: {margin}")
    if best and "ort" in times:
        # median(dlas) / median(ort), with its interval over the rounds
        ratio = measure.speedup(times["ort"], times[best], args.calls)
        notes.append(f"dlas/ort {ratio.ratio:.2f} (95%: {ratio.low:.2f}-{ratio.high:.2f})")
    return {
        "model": entry,
        "macs": macs,
        "medians": medians,
        "best": best,
        "notes": notes,
        "load": os.getloadavg(),
        "peak": peak,
    }


def format_row(row: dict, peers: list[str]) -> str:
    med = row["medians"]
    cells = [f"{row['model']:20s}"]
    cells += [f"{med[p]:9.2f}" if p in med else f"{'-':>9s}" for p in peers]
    best = row["best"]
    if best is None:
        return " ".join([*cells, "   no dlas build"])
    ms = med[best]
    gflops = model_gflops(row["macs"], ms)
    ort = med.get("ort")
    fastest_peer = min((med[p] for p in peers if p in med), default=None)
    cells += [
        f"{ms:9.2f}",
        f"{best[5:]:>12s}",
        f"{ms / ort:8.2f}" if ort else f"{'-':>8s}",
        f"{ms / fastest_peer:9.2f}" if fastest_peer else f"{'-':>9s}",
        f"{gflops:8.1f}",
        f"{gflops / row['peak']:7.1%}" if row["peak"] else f"{'-':>7s}",
        "{:.1f},{:.1f},{:.1f}".format(*row["load"]),
    ]
    return " ".join(cells)


def header(peers: list[str]) -> str:
    cols = [f"{'model@px':20s}", *(f"{p + ' ms':>9s}" for p in peers)]
    cols += [f"{'dlas ms':>9s}", f"{'(algorithm)':>12s}", f"{'dlas/ort':>8s}"]
    cols += [f"{'dlas/best':>9s}", f"{'GFLOP/s':>8s}", f"{'of peak':>7s}", "load 1/5/15 min"]
    return " ".join(cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(STUDY), help="name@px, comma-separated")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--peers", default=",".join(PEERS), help="eager,compile,ort")
    parser.add_argument("--repeat", type=int, default=15, help="round-robin rounds")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per system per round")
    parser.add_argument(
        "--cache-dir", default=".cache/dlas", help="roofline and algorithm=auto's timings"
    )
    parser.add_argument("--work-dir", default=".cache/dlas/work")
    args = parser.parse_args()
    split = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    args.algorithms, args.peers = split(args.algorithms), split(args.peers)
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"--peers: unknown {unknown}; choose from {list(PEERS)}")

    device = create_device(DeviceConfig(name="local", kind="local", num_threads=THREADS))
    with device.threads():
        target = host_target(THREADS)
        roofline = load_or_measure(Path(args.cache_dir).expanduser(), THREADS, target)
        peak = roofline.peak("float32")
        print(
            f"target: {target}\nthreads: {THREADS}; float32 peak {peak:.0f} GFLOP/s, "
            f"memory {roofline.memory_gbs:.0f} GB/s (dlas.devices.roofline); "
            f"load average {os.getloadavg()}\n{header(args.peers)}",
            flush=True,
        )
        rows = []
        for entry in split(args.models):
            rows.append(bench(entry, args, target, device, peak))
            print(format_row(rows[-1], args.peers), flush=True)
            for note in rows[-1]["notes"]:
                print(f"    {note}")
            print("    all: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1]["medians"].items()))
    print(f"\n{header(args.peers)}")
    for row in rows:
        print(format_row(row, args.peers))
    print(f"load average at the end: {os.getloadavg()} (shared machine: compare ratios)")


if __name__ == "__main__":
    main()
