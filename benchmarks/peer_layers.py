"""Where dlas gains or loses against ONNX Runtime, conv layer by conv layer, in the model.

    python benchmarks/peer_layers.py resnet50@224 --algorithm direct
    python benchmarks/peer_layers.py mobilenet_v2@224 --algorithm winograd --top 15

One model (random weights, as benchmarks/peers.py prepares it), dlas's untuned build and ONNX
Runtime (all graph optimizations), on the same threads in this one process. Each round runs
``--calls`` ORT calls under ORT's own profiler, then ``--calls`` dlas calls under
dlas.profile.profile_kernels; a layer's time is the median over its calls. Layers are matched by
(input channels, input size, output channels, output size), read from ORT's node shapes (where
ORT blocked a layer, with its channels padded) and from the first and last arguments of dlas's
kernels (a kernel whose arguments are not those two, such as a separate transform stage, counts
as "other"), and summed over the layers that share them. A layer's time includes what each
system fused into it, and what ORT runs after a conv as elementwise nodes of their own (SiLU as
QuickGelu, a residual Add), which dlas's conv kernel computes: read from ORT's optimized graph,
such a node joins the layer its first input comes from (``joined_nodes``). Then both whole
models, unprofiled and round-robin (``dlas.measure.speedup``), with the load average: profiles
show where the difference is, the round-robin figure how large it is.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

THREADS = int(os.environ.setdefault("TVM_NUM_THREADS", "2"))

import _libraries  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tvm  # noqa: E402
from peers import prepare  # noqa: E402
from tvm import relax  # noqa: E402

from dlas import measure  # noqa: E402
from dlas.algorithms import lower  # noqa: E402
from dlas.compiler.build import build  # noqa: E402
from dlas.compiler.export import export  # noqa: E402
from dlas.config.schema import OnnxRuntimeTuningConfig  # noqa: E402
from dlas.devices.local_cpu import host_target  # noqa: E402
from dlas.profile import profile_kernels  # noqa: E402
from dlas.tuning.onnx_runtime import export_onnx, require_onnxruntime  # noqa: E402

# (input channels, input size, output channels, output size) of a conv layer.
Key = tuple[int, int, int, int]
ROW = "{:>6} {:>4} {:>6} {:>4} {:>8} {:>8} {:>8} {:>9}"
# ORT's blocked (NCHWc) layers pad channels to whole blocks of 8 (AVX2) or 16 (AVX-512).
MAX_BLOCK = 16


def dlas_keys(mod: tvm.IRModule) -> dict[str, Key]:
    """Kernel name -> layer key, for kernels reading an activation first and writing one last,
    NCHW or blocked (``N[C/16]HW[16]``: ``blocked``'s, whose channels count in whole blocks)."""
    keys = {}
    for gv, func in mod.functions_items():
        shapes = [tuple(int(d) for d in p.shape) for p in func.params if hasattr(p, "shape")]
        activations = len(shapes) >= 2 and {len(shapes[0]), len(shapes[-1])} <= {4, 5}
        if "conv" in gv.name_hint and activations:
            x, out = shapes[0], shapes[-1]
            keys[gv.name_hint] = (channels_of(x), x[2], channels_of(out), out[2])
    return keys


def channels_of(shape: list[int] | tuple[int, ...]) -> int:
    return shape[1] * shape[4] if len(shape) == 5 else shape[1]


def layer_of(x: list[int], out: list[int], known: set[Key]) -> Key:
    """The dlas layer an ORT conv node computes: the same sizes and channels; else the only
    one whose channels ORT padded to whole blocks (its profiler shows a blocked NCHWc tensor
    as NCHW with the padded channels: 24 as 32, as blocked dlas kernels show it too); else
    ORT's own."""
    ic, oc = channels_of(x), channels_of(out)
    sized = [k for k in known if (k[1], k[3]) == (x[2], out[2])]
    if (ic, x[2], oc, out[2]) in sized:
        return (ic, x[2], oc, out[2])

    def padded(ort: int, real: int) -> bool:  # either side may have padded (blocked's too)
        return ort == real or (max(ort, real) % 8 == 0 and 0 < abs(ort - real) < MAX_BLOCK)

    found = [k for k in sized if padded(ic, k[0]) and padded(oc, k[2])]
    return found[0] if len(found) == 1 else (ic, x[2], oc, out[2])


# ORT ops that dlas fuses into the conv kernel whose output they read (activations, residual
# adds, gates): ORT's fused conv takes only a plain activation.
EPILOGUE_OPS = {
    "QuickGelu", "Sigmoid", "Mul", "Add", "Sum", "Relu", "Clip", "HardSigmoid", "HardSwish",
}  # fmt: skip


def joined_nodes(nodes: list[Any]) -> dict[str, str]:
    """Node name -> the conv node it joins, for ONNX ``nodes`` in graph order: each
    EPILOGUE_OPS node whose first input was written by a conv or by a node joined to one."""
    owner_of_tensor: dict[str, str] = {}
    joined: dict[str, str] = {}
    for node in nodes:
        if node.op_type in ("Conv", "FusedConv"):
            owner = node.name
        elif node.op_type in EPILOGUE_OPS and node.input and node.input[0] in owner_of_tensor:
            owner = joined[node.name] = owner_of_tensor[node.input[0]]
        else:
            continue
        owner_of_tensor.update(dict.fromkeys(node.output, owner))
    return joined


def ort_layers(
    events: list[dict], known: set[Key], joined: dict[str, str]
) -> tuple[dict[Key, float], dict[Key, str], float]:
    """Per layer key: ms per model call, with the nodes ``joined`` to its conv; the kernel
    (KxK, /groups); ms of all other nodes."""
    calls: dict[str, list[float]] = defaultdict(list)
    keys, kinds = {}, {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"].removesuffix("_kernel_time")
        calls[node].append(e["dur"] / 1e3)
        args = e["args"]
        if "Conv" in args.get("op_name", "") and node not in keys:
            shapes = [next(iter(s.values())) for s in args["input_type_shape"]]
            x, w = shapes[0], shapes[1]
            keys[node] = layer_of(x, next(iter(args["output_type_shape"][0].values())), known)
            groups = keys[node][0] // w[1] if len(w) == 4 else 1
            kinds[keys[node]] = f"{w[-1]}x{w[-1]}" + (f"/{groups}" if groups > 1 else "")
    per_key: dict[Key, float] = defaultdict(float)
    other = 0.0
    for node, times in calls.items():
        conv = node if node in keys else joined.get(node)
        if conv in keys:
            per_key[keys[conv]] += float(np.median(times))
        else:
            other += float(np.median(times))
    return per_key, kinds, other


def profile_alternately(
    executable: tvm.runtime.Module, session: object, x: np.ndarray, rounds: int, calls: int
) -> list[dict[str, float]]:
    """Per round, ``calls`` profiled ORT calls (its profiler records them), then ``calls`` dlas
    calls under profile_kernels: dlas's {kernel: ms} per round."""
    feed = {session.get_inputs()[0].name: x}
    dev = tvm.cpu()
    dlas_runs = []
    for _ in range(rounds):
        for _ in range(calls + 1):  # the first call of a round warms up
            session.run(None, feed)
        vm = relax.VirtualMachine(executable, dev)  # profile_kernels instruments it for good
        dlas_runs.append({k.name: k.ms for k in profile_kernels(vm, dev, x, calls)})
    return dlas_runs


def dlas_layers(
    runs: list[dict[str, float]], keys: dict[str, Key]
) -> tuple[dict[Key, float], float]:
    """Per layer key: ms per model call (median over rounds); ms of the other kernels."""
    per_key: dict[Key, float] = defaultdict(float)
    other = 0.0
    for kernel in runs[0]:
        ms = float(np.median([run.get(kernel, 0.0) for run in runs]))
        if kernel in keys:
            per_key[keys[kernel]] += ms
        else:
            other += ms
    return per_key, other


def print_layers(
    dlas_ms: dict[Key, float],
    ort_ms: dict[Key, float],
    kinds: dict[Key, str],
    top: int,
) -> None:
    """The layers, largest loss of dlas first, then the sums per kernel kind."""
    print(ROW.format("in", "px", "out", "px", "kernel", "dlas", "ort", "dlas/ort"))
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    layers = sorted(set(dlas_ms) | set(ort_ms), key=lambda k: ort_ms.get(k, 0) - dlas_ms.get(k, 0))
    for i, key in enumerate(layers):
        ours, theirs = dlas_ms.get(key, 0.0), ort_ms.get(key, 0.0)
        kind = f"{kinds.get(key, '?')} s{max(1, round(key[1] / key[3]))}"
        by_kind[kind][0] += ours
        by_kind[kind][1] += theirs
        if i < top:
            ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
            print(ROW.format(*key, kind, f"{ours:.3f}", f"{theirs:.3f}", ratio))
    print("by kernel:", ", ".join(f"{k} {d:.2f} vs {o:.2f}" for k, (d, o) in by_kind.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="name@px, e.g. resnet50@224")
    parser.add_argument("--algorithm", default="direct")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=40, help="layers to list, largest gap first")
    args = parser.parse_args()
    ort = require_onnxruntime()
    name, size = args.model.split("@")
    model, spec, x = prepare(name, int(size))
    target = host_target(THREADS)
    lowered = lower(export(model, spec), args.algorithm, target)
    executable = build(lowered.mod, target)
    keys = dlas_keys(lowered.mod)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, spec, path, OnnxRuntimeTuningConfig().opset)
        sessions = []
        for profiled in (True, False):
            options = ort.SessionOptions()
            options.intra_op_num_threads = THREADS
            options.enable_profiling = profiled
            options.profile_file_prefix = str(Path(tmp) / "ort")
            if profiled:  # the graph ORT runs, whose node names its profile gives
                options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            sessions.append(
                ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            )
        runs = profile_alternately(executable, sessions[0], x, args.rounds, args.calls)
        events = json.loads(Path(sessions[0].end_profiling()).read_text())
        joined = joined_nodes(onnx.load(str(Path(tmp) / "optimized.onnx")).graph.node)
    ort_ms, kinds, ort_other = ort_layers(events, set(keys.values()), joined)
    dlas_ms, dlas_other = dlas_layers(runs, keys)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    data = tvm.runtime.tensor(x, tvm.cpu())
    feed = {sessions[1].get_inputs()[0].name: x}
    calls = max(args.calls // 2, 1)
    times = _libraries.round_robin(
        {"dlas": lambda: vm["main"](data), "ort": lambda: sessions[1].run(None, feed)},
        max(args.rounds * 2, 2),
        calls,
    )
    print(
        f"{args.model} dlas {args.algorithm} vs ONNX Runtime {ort.__version__}, {THREADS} threads, "
        f"load {os.getloadavg()[0]:.2f}; ms per model call, median of {args.rounds} x "
        f"{args.calls} profiled calls"
    )
    print_layers(dlas_ms, ort_ms, kinds, args.top)
    print(f"other kernels/nodes: dlas {dlas_other:.2f} ms, ort {ort_other:.2f} ms")
    print(
        f"profiled sums: dlas {sum(dlas_ms.values()) + dlas_other:.2f} ms, "
        f"ort {sum(ort_ms.values()) + ort_other:.2f} ms"
    )
    ratio = measure.speedup(times["ort"], times["dlas"], calls)
    print(
        f"whole model, unprofiled: dlas {np.median(times['dlas']):.2f} ms, "
        f"ort {np.median(times['ort']):.2f} ms, dlas/ort {ratio}"
    )


if __name__ == "__main__":
    main()
