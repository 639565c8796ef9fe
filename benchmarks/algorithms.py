"""Untuned latency of each conv2d algorithm against PyTorch eager (not a test: a table).

    python benchmarks/algorithms.py                              # everything (long)
    python benchmarks/algorithms.py --models resnet18 --sizes 224 --sparsity ""
    python benchmarks/algorithms.py --models vgg16 --sizes 32 --algorithms "" --sparsity 0.9

Batch 1, 2 threads on both sides. Every algorithm of a row group and PyTorch eager (under
``torch.no_grad``) are called round-robin in one process (``--repeat`` rounds of 3 calls, each
after 0.1 s of untimed calls: ``_libraries.round_robin``), so all see the same machine
load; medians (and minima) of those calls. Models at <= 64 px are the CIFAR
variants. The sparse rows use the same model with every conv and linear weight magnitude-
pruned (per layer) to the given sparsity, and put each sparse algorithm next to its dense
counterpart on that same pruned model. Every compiled model is checked against PyTorch.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import tvm
from _libraries import round_robin
from tvm import relax

from dlas.algorithms import ALGORITHMS, lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.devices.local_cpu import host_target
from dlas.models import create_model


@dataclass
class Row:
    model: str
    size: int
    sparsity: float
    algorithm: str
    tvm_ms: float
    tvm_min_ms: float
    torch_ms: float
    lower_s: float
    build_s: float
    rel_err: float

    @property
    def ratio(self) -> float:
        return self.tvm_ms / self.torch_ms


def prune(model: torch.nn.Module, amount: float) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                w = module.weight
                k = max(1, int(amount * w.numel()))
                cut = w.abs().flatten().kthvalue(k).values
                w.mul_((w.abs() > cut).float())


def give_batchnorm_statistics(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """Fresh BN layers are identities; a few training-mode batches make them do real work."""
    gen = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn((4, *shape[1:]), generator=gen))
    model.eval()


def measure(
    name: str,
    size: int,
    sparsity: float,
    algorithms: list[str],
    repeat: int,
    target,
    tir_cse: bool = False,
) -> list[Row]:
    torch.manual_seed(0)
    spec = InputSpec(3, size, 10)
    model = create_model(name, 10, image_size=size)
    if sparsity:
        prune(model, sparsity)
    give_batchnorm_statistics(model, spec.shape)
    x = torch.randn(spec.shape)
    with torch.no_grad():
        ref = model(x).numpy()
    mod = export(model, spec)
    dev = tvm.cpu()
    data = tvm.runtime.tensor(x.numpy(), dev)
    systems, built = {}, {}
    for algorithm in algorithms:
        start = time.perf_counter()
        with target:  # algorithm=auto times its candidates on this target
            lowered = lower(mod, algorithm, target)
        lowered_at = time.perf_counter()
        with tvm.transform.PassContext(config={"tirx.disable_cse_tir": not tir_cse}):
            vm = relax.VirtualMachine(build(lowered.mod, target), dev)
        out = vm["main"](data)[0].numpy()
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        systems[algorithm] = functools.partial(vm["main"], data)
        built[algorithm] = (lowered_at - start, time.perf_counter() - lowered_at, err)
        print(f"# built {name}-{size} {algorithm}: {sum(built[algorithm][:2]):.0f} s", flush=True)

    def eager() -> None:
        with torch.no_grad():
            model(x)

    times = round_robin({**systems, "pytorch": eager}, rounds=repeat, calls=3)
    torch_ms = statistics.median(times["pytorch"])
    rows = []
    for algorithm in algorithms:
        rows.append(
            Row(
                name,
                size,
                sparsity,
                algorithm,
                statistics.median(times[algorithm]),
                min(times[algorithm]),
                torch_ms,
                *built[algorithm],
            )
        )
        print(format_row(rows[-1]), flush=True)
    print(f"# load average {os.getloadavg()}", flush=True)
    return rows


HEADER = (
    f"{'model':13s} {'size':>4s} {'sparsity':>8s} {'algorithm':20s} {'tvm ms':>9s} "
    f"{'(min)':>9s} {'torch ms':>9s} {'tvm/torch':>9s} {'lower s':>7s} {'build s':>7s} "
    f"{'rel err':>8s}"
)


def format_row(r: Row) -> str:
    return (
        f"{r.model:13s} {r.size:4d} {r.sparsity:8.2f} {r.algorithm:20s} {r.tvm_ms:9.2f} "
        f"{r.tvm_min_ms:9.2f} {r.torch_ms:9.2f} {r.ratio:9.2f} {r.lower_s:7.1f} "
        f"{r.build_s:7.1f} {r.rel_err:8.1e}"
    )


def main() -> None:
    kernels = [n for n in ALGORITHMS.names() if not ALGORITHMS.get(n).composite]
    dense = [n for n in kernels if not ALGORITHMS.get(n).sparse]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,vgg16")
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--algorithms", default=",".join(dense), help="dense rows")
    parser.add_argument("--sparsity", default="0.5,0.9", help="pruned rows ('' for none)")
    parser.add_argument("--sparse-sizes", default="32,224")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--tir-cse",
        action="store_true",
        help="build with TIR's common-subexpression elimination (dlas builds skip it)",
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    torch.set_num_threads(2)
    target = host_target()
    split = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    print(f"target: {target}\n{HEADER}", flush=True)
    rows: list[Row] = []
    for name in split(args.models):
        for size in map(int, split(args.sizes)):
            if split(args.algorithms):
                rows += measure(
                    name, size, 0.0, split(args.algorithms), args.repeat, target, args.tir_cse
                )
        for size in map(int, split(args.sparse_sizes)):
            for level in map(float, split(args.sparsity)):
                pairs = []
                for sparse in (n for n in kernels if ALGORITHMS.get(n).sparse):
                    pairs += [ALGORITHMS.get(sparse).dense_counterpart, sparse]
                rows += measure(name, size, level, pairs, args.repeat, target, args.tir_cse)
    print(f"\n{HEADER}")
    for r in rows:
        print(format_row(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"ratio": r.ratio} for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
