"""Where a model's threads wait: each kernel's CPU samples per thread, from ``perf record``.

    python benchmarks/thread_idle.py efficientnet_b0@224 --algorithm blocked

One model (random weights, as benchmarks/peers.py prepares it), dlas's untuned build exported
as a library and run in a child process, call after call, for ``--seconds`` under
``perf record -e cpu-clock`` (Linux perf; root or perf_event_paranoid <= 1). Each sample is
put in the kernel whose code it hit (the library's symbols, ``nm``), or in "wait" where a
thread was in TVM's thread pool waiting for work (``sched_yield`` and the kernel's scheduler),
or in "other" (the VM and Python between kernels). Per kernel the table gives the main
thread's samples, the other TVM threads', and the other threads' wait samples taken while
the main thread was in that kernel: a share split unevenly over the threads (an odd number of
parallel tasks on two threads), or a worker that starts late, shows there.

Keep ``--frequency`` low: perf's own work runs on the same cores. At 5,000 samples a second on
a 2-core Zen 4, one thread ran 7x the other's samples in a depthwise kernel whose two equal
halves, timed without perf, ran 1.73x faster on two threads than on one; at 250 a second the
two were within 1.15x. Few samples a second want many seconds.
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

THREADS = int(os.environ.setdefault("TVM_NUM_THREADS", "2"))

# What a thread samples while TVM's pool waits for work (the user and the kernel side).
WAIT = re.compile(r"sched_yield|__schedule|^schedule$|do_syscall_64|entry_SYSCALL|syscall_")


def run_calls(library: Path, seconds: float) -> None:
    """The child: the library's main function, call after call, for ``seconds``."""
    import numpy as np
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    vm.set_input("main", tvm.runtime.tensor(np.load(f"{library}.npy"), tvm.cpu()))
    vm.invoke_stateful("main")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        vm.invoke_stateful("main")


def export_library(entry: str, algorithm: str, folder: Path) -> Path:
    import numpy as np
    from peers import prepare

    from dlas.algorithms import lower
    from dlas.compiler.build import build
    from dlas.compiler.export import export
    from dlas.devices.local_cpu import host_target

    name, size = entry.split("@")
    model, spec, x = prepare(name, int(size))
    target = host_target(THREADS)
    library = folder / "model.so"
    build(lower(export(model, spec), algorithm, target).mod, target).export_library(str(library))
    np.save(f"{library}.npy", x)
    return library


def symbols(library: Path) -> tuple[list[int], list[str]]:
    """The library's code symbols by address, each named by the kernel it belongs to (TVM
    names a kernel's parallel body after the kernel)."""
    rows = []
    for line in subprocess.run(
        ["nm", "-n", str(library)], capture_output=True, text=True
    ).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            rows.append((int(parts[0], 16), re.sub(r"_compute_.*|_lambda.*", "", parts[2])))
    return [a for a, _ in rows], [n for _, n in rows]


def samples(data: Path, library: Path) -> tuple[int, list[tuple[int, float, str]]]:
    """(the main thread's id, [(thread, time, where)]) from ``perf script``."""
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "--show-mmap-events", "-F", "pid,tid,time,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    base = None
    for m in re.finditer(
        rf"MMAP2?.*\[(0x[0-9a-f]+)\(0x[0-9a-f]+\) @ (0x[0-9a-f]+|0) .*{re.escape(library.name)}",
        out,
    ):
        start, offset = int(m[1], 16), int(m[2], 16)
        base = start - offset if base is None else min(base, start - offset)
    if base is None:
        raise RuntimeError(f"perf recorded no mapping of {library}")
    addrs, names = symbols(library)
    found, main = [], None
    sample = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
    for line in out.splitlines():
        if not (m := sample.match(line)):
            continue
        pid, tid, when, ip, sym, dso = int(m[1]), int(m[2]), float(m[3]), int(m[4], 16), m[5], m[6]
        main = pid
        if dso == str(library):
            where = "K:" + names[max(0, bisect.bisect_right(addrs, ip - base) - 1)]
        else:
            where = "wait" if WAIT.search(sym) else "other"
        found.append((tid, when, where))
    return main, found


def table(main: int, found: list[tuple[int, float, str]], top: int) -> str:
    start = min(t for _, t, w in found if w.startswith("K:"))
    found = [s for s in found if s[1] >= start]  # from the first kernel call: no imports
    workers = {tid for tid, _, w in found if tid != main and w.startswith("K:")}
    on_main = [s for s in found if s[0] == main]
    main_times = [t for _, t, _ in on_main]
    by_main, by_workers, idle = Counter(), Counter(), Counter()
    for tid, when, where in found:
        if tid == main:
            by_main[where] += 1
        elif tid in workers:
            by_workers[where] += 1
            if where == "wait":
                i = max(0, bisect.bisect_right(main_times, when) - 1)  # main's latest
                idle[on_main[i][2]] += 1
    worker_total = sum(by_workers.values()) or 1
    lines = [
        f"main thread: {sum(by_main.values())} samples, {by_main['wait']} waiting, "
        f"{by_main['other']} outside kernels; other TVM threads ({len(workers)}): "
        f"{worker_total} samples, {by_workers['wait'] / worker_total:.1%} waiting, "
        f"{sum(v for k, v in idle.items() if k.startswith('K:')) / worker_total:.1%} waiting "
        f"while the main thread was in a kernel",
        f"{'kernel':52s} {'main':>7s} {'others':>7s} {'others wait':>12s} {'wait/main':>10s}",
    ]
    kernels = sorted((k for k in by_main if k.startswith("K:")), key=lambda k: -idle[k])
    for k in kernels[:top]:
        lines.append(
            f"{k[2:54]:52s} {by_main[k]:7d} {by_workers[k]:7d} {idle[k]:12d} "
            f"{idle[k] / by_main[k]:10.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="name@px, e.g. efficientnet_b0@224")
    parser.add_argument("--algorithm", default="blocked")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--frequency", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--run-library", help=argparse.SUPPRESS)  # the child's own call
    args = parser.parse_args()
    if args.run_library:
        run_calls(Path(args.run_library), args.seconds)
        return
    if shutil.which("perf") is None or shutil.which("nm") is None:
        sys.exit(
            "thread_idle.py needs Linux perf and nm (Debian: apt-get install linux-perf binutils)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        library = export_library(args.model, args.algorithm, folder)
        data = folder / "perf.data"
        child = [sys.executable, __file__, args.model, "--run-library", str(library)]
        subprocess.run(
            [
                "perf",
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                str(args.frequency),
                "-o",
                str(data),
                "--",
                *child,
                "--seconds",
                str(args.seconds),
            ],
            check=True,
        )
        main_thread, found = samples(data, library)
    print(
        f"{args.model} {args.algorithm}, {THREADS} threads, {args.seconds:g} s of calls, "
        f"load {os.getloadavg()}"
    )
    print(table(main_thread, found, args.top))


if __name__ == "__main__":
    main()
