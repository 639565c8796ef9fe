"""Low precision that pays: dlas fp32/int8/bf16/fp16 against PyTorch and ONNX Runtime int8.

    python benchmarks/low_precision.py                  # the issue's rows (PYTHONPATH=. in a checkout)
    python benchmarks/low_precision.py --rows resnet18:32 --runs 100 --algorithm spatial_pack
    python benchmarks/low_precision.py --rows resnet18:224 --algorithm spatial_pack,gemm
    python benchmarks/low_precision.py --mcpu skylake-avx512    # dlas for an AVX-512 CPU without
                                                                # VNNI (runs on any newer one)

Batch 1, 2 threads everywhere (TVM_NUM_THREADS, torch.set_num_threads, ORT intra-op). All
systems of a row are timed in one process, interleaved round-robin in blocks of
``--block`` calls (so a change of machine load hits every system alike; blocks keep TVM's
spinning worker threads from stealing PyTorch's cores between single calls); each system
gets ``--runs`` timed calls in total, median reported, with os.getloadavg(). Each comparison
is a ratio of medians with a 95% interval from resampling whole rounds (``dlas.measure.speedup``).

32 px rows use the default job's trained checkpoint (dataset=digits, trained on first use
and cached under --cache-dir) and report top-1 on ``--test-limit`` test images for every
system; 224 px rows use the ImageNet architecture with untrained weights (latency only).
int8 (dlas, PyTorch, ONNX Runtime) is calibrated on the same training images.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence

import _libraries
import numpy as np
import torch

from dlas import measure

THREADS = 2
os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))

COMPRESSIONS = ("fp32", "int8", "bf16", "fp16")
ROWS = ["resnet18:32", "mobilenet_v2:32", "vgg16:32", "resnet18:224", "vgg16:224"]


def compose(model: str, cache_dir: str, overrides: Sequence[str] = ()) -> object:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from dlas.config import register_schemas, validate

    register_schemas()
    with initialize_config_module("dlas.conf", version_base=None):
        cfg = hydra_compose(
            "config", overrides=[f"model={model}", f"paths.cache_dir={cache_dir}", *overrides]
        )
    return validate(cfg)


def trained(model: str, cache_dir: str, overrides: Sequence[str] = ()):
    """(float model, data bundle) of the default job, trained on first use."""
    from pathlib import Path

    from dlas.cache import Cache
    from dlas.data import load_dataset
    from dlas.models import load_or_train

    cfg = compose(model, cache_dir, overrides)
    data = load_dataset(cfg.dataset)
    cache = Cache(Path(cache_dir).expanduser().resolve())
    net, _ = load_or_train(cfg.model, cfg.dataset, data, cache)
    return net.eval(), data, cfg


def compressed(mod, compression: str, model, samples):
    """``mod`` rewritten by a dlas compression (int8 calibrated on ``samples``)."""
    if compression == "int8":
        from dlas.compression.int8 import calibrate
        from dlas.compression.quantize import quantize_module

        mod, _ = quantize_module(mod, calibrate(model, samples))
    elif compression == "bf16":
        from dlas.compression.bf16 import to_bf16

        mod, _ = to_bf16(mod)
    elif compression == "fp16":
        from dlas.compression.fp16 import to_fp16

        mod = to_fp16(mod)
    return mod


def dlas_system(mod, compression: str, model, samples, algorithm: str, target):
    """Compile ``mod`` with a dlas compression; returns (forward, layer table)."""
    import tvm
    from tvm import relax

    from dlas.algorithms import lower
    from dlas.compiler.build import build

    lowered = lower(compressed(mod, compression, model, samples), algorithm, target)
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())

    def forward(x: np.ndarray) -> np.ndarray:
        vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x), tvm.cpu()))
        vm.invoke_stateful("main")
        out = vm.get_outputs("main")
        while isinstance(out, tuple):
            out = out[0]
        return out.numpy()

    return forward, lowered.layers


def systems_for(
    model, spec, samples, algorithms: list[str], target, work_dir, compressions=COMPRESSIONS
) -> dict[str, Callable]:
    from dlas.algorithms import intrinsics
    from dlas.compiler.export import export
    from dlas.tuning.baselines import torch_function
    from dlas.tuning.int8_peers import onnxruntime_int8, pytorch_int8
    from dlas.tuning.onnx_runtime import export_onnx

    mod = export(model, spec)
    systems: dict[str, Callable] = {}
    for compression in compressions:
        if compression == "bf16" and not intrinsics.has_bf16(target):
            print("  dlas bf16: skipped, this CPU has no AVX512-BF16")
            continue
        for algorithm in algorithms:
            start = time.perf_counter()
            forward, layers = dlas_system(mod, compression, model, samples, algorithm, target)
            kernels = sorted({str(r.get("kernel")) for r in layers if r.get("kernel")})
            name = _dlas_name(compression, algorithm, algorithms)
            print(f"  {name}: compiled in {time.perf_counter() - start:.1f}s {kernels}")
            systems[name] = forward
    torch.set_num_threads(THREADS)
    systems["pytorch fp32"] = torch_function(model)
    systems["pytorch int8"] = torch_function(pytorch_int8(model, samples))
    import onnxruntime as ort

    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "f.onnx"
    export_onnx(model, spec, path, 17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    systems["ort fp32"] = lambda x: session.run(None, {"input": x})[0]
    systems["ort int8"], _ = onnxruntime_int8(path, samples, work_dir, THREADS)
    return systems


def _dlas_name(compression: str, algorithm: str, algorithms: list[str]) -> str:
    return f"dlas {compression}" + (f" {algorithm}" if len(algorithms) > 1 else "")


def best_dlas(medians: dict[str, float], compression: str) -> tuple[str, float]:
    """The fastest dlas system of a compression (over the algorithms compared)."""
    mine = {n: ms for n, ms in medians.items() if n.split()[:2] == ["dlas", compression]}
    name = min(mine, key=mine.get)
    return name, mine[name]


def interleaved(
    systems: dict[str, Callable], x: np.ndarray, runs: int, block: int, warmup: float
) -> dict[str, list[float]]:
    """Times (ms) of each system over at least ``runs`` calls, ``block`` at a time round-robin
    (``_libraries.round_robin``: ``warmup`` seconds of untimed calls before each block)."""
    for f in systems.values():  # warm-up
        for _ in range(3):
            f(x)
    calls = {name: functools.partial(f, x) for name, f in systems.items()}
    return _libraries.round_robin(calls, rounds=-(-runs // block), calls=block, warmup_s=warmup)


def print_speedups(
    times: dict[str, list[float]],
    compressions: list[str],
    algorithms: list[str],
    block: int,
    fp32_name: str,
) -> None:
    """The issue's comparisons, each a ratio of medians with its interval over the rounds."""
    medians = {name: statistics.median(ms) for name, ms in times.items()}

    def faster(name: str, than: str) -> measure.Speedup:
        return measure.speedup(times[name], times[than], block)

    peers = {n: ms for n, ms in medians.items() if not n.startswith("dlas")}
    best_peer = min(peers, key=peers.get)
    if "int8" in compressions:
        int8_name, _ = best_dlas(medians, "int8")
        print(f"  {int8_name} vs pytorch int8 {faster(int8_name, 'pytorch int8')}, "
              f"vs ort int8 {faster(int8_name, 'ort int8')}, "
              f"vs fastest peer ({best_peer}) {faster(int8_name, best_peer)}")  # fmt: skip
        if "fp32" in compressions:
            pairs = {
                a: [_dlas_name(c, a, algorithms) for c in ("int8", "fp32")] for a in algorithms
            }
            same = ", ".join(f"{a} {faster(*pair)}" for a, pair in pairs.items())
            print(f"  dlas int8 vs fp32, same algorithm: {same}")
    if any(n.startswith("dlas bf16") for n in medians):
        bf16_name, _ = best_dlas(medians, "bf16")
        print(f"  {bf16_name} vs {fp32_name} {faster(bf16_name, fp32_name)}")


def top1(forward: Callable, data, limit: int) -> float:
    correct = total = 0
    for x, y in data.test_loader(batch_size=1, limit=limit):
        correct += int(np.argmax(forward(x.numpy())) == int(y[0]))
        total += 1
    return 100.0 * correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument(
        "--algorithm",
        default="spatial_pack",
        help="comma-separated: every dlas system is built with each (ratios use the fastest)",
    )
    parser.add_argument(
        "--compressions",
        default=",".join(COMPRESSIONS),
        help="comma-separated dlas compressions to build (the peers always run)",
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument(
        "--warmup", type=float, default=0.1, help="seconds of untimed calls before each block"
    )
    parser.add_argument("--test-limit", type=int, default=300)
    parser.add_argument("--cache-dir", default=".cache/dlas")
    parser.add_argument("--mcpu", default="auto", help="the CPU dlas compiles for (LLVM name)")
    parser.add_argument("--work-dir", default="/tmp/dlas-lp", help="ONNX files")
    parser.add_argument(
        "--trained",
        default="resnet18,mobilenet_v2,vgg16",
        help="models whose 32 px rows use (and, on first use, train) the default job's "
        "checkpoint; the others run untrained weights (latency only)",
    )
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra overrides of the trained rows' job, e.g. dataset.train.epochs=1",
    )
    args = parser.parse_args()

    from pathlib import Path

    import tvm

    from dlas.data import InputSpec
    from dlas.devices.local_cpu import resolve_target_dict
    from dlas.models import create_model

    target = tvm.target.Target(resolve_target_dict({"kind": "llvm", "mcpu": args.mcpu}, THREADS))
    print(f"target {target.mcpu}, {THREADS} threads, algorithm={args.algorithm}, "
          f"median of {args.runs} interleaved runs")  # fmt: skip
    compressions = args.compressions.split(",")
    for row in args.rows.split(","):
        name, size = row.split(":")[0], int(row.split(":")[1])
        print(f"\n== {name} @ {size}x{size}  (load average before: {os.getloadavg()})")
        if size <= 64 and name in args.trained.split(","):
            model, data, _ = trained(name, args.cache_dir, args.override)
            spec = data.spec
            samples = data.calibration_batches(256, batch_size=32)
        else:
            data = None
            model = create_model(name, 10, image_size=size).eval()
            spec = InputSpec(3, size, 10)
            print("  untrained weights: latency only")
            torch.manual_seed(0)
            with torch.no_grad():  # non-trivial batch-norm statistics
                model.train()
                for _ in range(2):
                    model(torch.randn(4, 3, size, size))
                model.eval()
            samples = [torch.randn(8, 3, size, size) for _ in range(2)]
        algorithms = args.algorithm.split(",")
        systems = systems_for(
            model,
            spec,
            samples,
            algorithms,
            target,
            Path(args.work_dir),
            compressions,
        )
        x = samples[0][:1].numpy()
        times = interleaved(systems, x, args.runs, args.block, args.warmup)
        medians = {name: statistics.median(ms) for name, ms in times.items()}
        accuracy = {n: top1(f, data, args.test_limit) for n, f in systems.items()} if data else {}
        fp32_name, fp32 = (
            best_dlas(medians, "fp32")
            if "fp32" in compressions
            else ("pytorch fp32", medians["pytorch fp32"])
        )
        for sys_name, ms in medians.items():
            acc = f"  top-1 {accuracy[sys_name]:5.1f}%" if accuracy else ""
            print(f"  {sys_name:26s} {ms:8.3f} ms  x{fp32 / ms:5.2f} vs {fp32_name}{acc}")

        print_speedups(times, compressions, algorithms, args.block, fp32_name)
        print(f"  load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
