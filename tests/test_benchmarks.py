"""Every benchmark script smoke-tested by glob: ``benchmarks/*.py`` (not ``_*.py`` helpers) run
in a subprocess with the tiniest arguments that still take its whole code path (tiny model,
32 px, one or two timed calls, a few tuning trials, a few test images), every cache, MLflow
store and work folder under ``tmp_path``. The figures are not checked, only that the script
runs to the end: a benchmark that broke with a library change fails here, not in a long run.

A new benchmark needs an entry in ``SMOKE_ARGS`` (``test_every_benchmark_has_smoke_args``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(
    p.name for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")
)

# Script name → its arguments; "{tmp}" is the test's tmp_path. The comments give each run's
# duration on a 2-core machine.
SMOKE_ARGS: dict[str, list[str]] = {
    "algorithms.py": [  # 25 s: one dense build, three sparse/dense pairs
        "--models", "tiny_cnn", "--sizes", "32", "--algorithms", "direct",
        "--sparsity", "0.5", "--sparse-sizes", "32", "--repeat", "1",
        "--json", "{tmp}/algorithms.json",
    ],
    "auto_choices.py": [  # 15 s: two choosings per protocol of a tiny model's layers
        "--models", "tiny_cnn@32", "--choosings", "2", "--rounds", "1", "2", "--repeat", "2",
    ],
    "auto_race.py": [  # 10 s: two races per size of a tiny model's two lowerings
        "--models", "tiny_cnn@32", "--races", "2", "--sizes", "2x1", "4x2",
    ],
    "compression.py": [  # 30 s: two pipeline runs (the pruning row's override too)
        "--models", "tiny_cnn", "--algorithms", "direct",
        "--compressions", "dense", "weight_pruning 50%", "--finetune-epochs", "0",
        "--timed-runs", "2", "--cache-dir", "{tmp}/cache", "--mlruns-dir", "{tmp}/mlruns",
        "--json", "{tmp}/compression.json",
        "--override", "dataset.train.epochs=0", "dataset.test_limit=16", "eval.roofline=false",
    ],
    "devices.py": [  # 55 s (slow)
        "--model", "tiny_cnn", "--size", "32", "--warmup", "1", "--repeat", "2",
        "--rounds", "1", "--test-limit", "4",
    ],
    "isa_throughput.py": ["--iterations", "100000"],  # 1 s: compiles a C loop, runs it
    "int8_layers.py": [  # 10 s: one small layer, four builds
        "--layers", "64,8,32,3,1,1", "--rounds", "1", "--number", "1",
    ],
    "low_precision.py": [  # 45 s (slow): a trained (epochs=0) row, all systems, two algorithms
        "--rows", "tiny_cnn:32", "--trained", "tiny_cnn", "--runs", "2", "--block", "1",
        "--algorithm", "spatial_pack,gemm",
        "--warmup", "0", "--test-limit", "4", "--cache-dir", "{tmp}/cache",
        "--work-dir", "{tmp}/work", "--override", "dataset.train.epochs=0",
    ],
    "peer_layers.py": [  # 10 s
        "tiny_cnn@32", "--algorithm", "blocked", "--rounds", "1", "--calls", "1",
    ],
    "peers.py": [  # 17 s (torch.compile's first compile alone would add ~25 s)
        "--models", "tiny_cnn@32", "--algorithms", "direct,blocked", "--peers", "eager,ort",
        "--repeat", "1", "--calls", "1", "--cache-dir", "{tmp}/cache",
        "--work-dir", "{tmp}/work",
    ],
    "profile_model.py": [  # 13 s
        "tiny_cnn@32", "--algorithm", "direct", "--top", "3", "--repeat", "1",
        "--cache-dir", "{tmp}/cache",
    ],
    "roofline.py": ["--threads", "1", "--cache-dir", "{tmp}/cache"],  # 8 s: measured (no cache)
    "thread_idle.py": [  # 13 s
        "tiny_cnn@32", "--seconds", "1", "--frequency", "1000", "--top", "3",
    ],
    "scaleout.py": ["--workers", "1", "--trials", "1"],  # marked scaleout
    "search.py": [  # 11 s: the replay of a recorded study (_recorded_study)
        "--experiment", "study_smoke", "--study", "study_smoke", "--seeds", "1",
        "--tracking-uri", "sqlite:///{tmp}/mlruns/mlflow.db", "--out", "{tmp}/search.json",
    ],
    "serving.py": ["--model", "tiny_cnn", "--requests", "2", "--fresh", "1"],  # 55 s (slow)
    "tuning.py": [  # 35 s: untuned, tuned (2 trials), --reuse-check rebuild, pytorch
        "--models", "tiny_cnn", "--size", "32", "--algorithms", "direct", "--trials", "2",
        "--tuning", "tuning.trials_per_iter=2", "tuning.cost_model=random",
        "++tuning.strategy_options={population_size:8,init_min_unmeasured:2}",
        "tuning.include_defaults=false", "tuning.progress=false",
        "--baselines", "pytorch", "--timed-runs", "2", "--reuse-check",
        "--cache-dir", "{tmp}/cache", "--mlruns-dir", "{tmp}/mlruns", "--json", "{tmp}/tuning.json",
        "--override", "eval.roofline=false",
    ],
}  # fmt: skip

# Over ~40 s even so: two fresh `python -m dlas.run` jobs against a loopback RPC server
# (devices, ~55 s); training and logging a run, a fresh process and `mlflow models serve`
# (serving, ~55 s). algorithms, compression, tuning and low_precision (25-45 s each) run
# `-m slow` to keep the default suite within CI's 20 minutes: their code paths (dlas.run,
# lower/build, the tuner, the low-precision kernels) have tests of their own; the scripts' own
# code then runs only there.
SLOW = {
    "devices.py", "serving.py", "algorithms.py", "compression.py", "tuning.py",
    "low_precision.py",
}  # fmt: skip
# PostgreSQL + an MLflow server (tests/scaleout/services.py); skipped where they cannot start.
SCALEOUT = {"scaleout.py"}


def _env(tmp: Path | None) -> dict[str, str]:
    """The scripts' environment; ``tmp``: their temporary folders (mkdtemp's, TorchInductor's)
    go there."""
    # As a user runs them, ``python benchmarks/X.py`` from the repository: only the scripts'
    # own folder is on sys.path, so an import of ``benchmarks.…`` fails here as it would there.
    env = dict(os.environ, TQDM_DISABLE="1")
    for var in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "DLAS_PARENT_RUN_ID"):
        env.pop(var, None)
    if tmp is not None:
        (tmp / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp / "tmp")
    return env


def _run(cmd: list[str], tmp: Path | None, timeout: float = 900) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            cmd,
            cwd=REPO,
            env=_env(tmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        out = error.output or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"{' '.join(cmd)} ran over {timeout:.0f} s:\n{_tail(out)}")


def _tail(out: str, chars: int = 6000) -> str:
    return out if len(out) <= chars else "...\n" + out[-chars:]


def _recorded_study(tmp: Path) -> None:
    """search.py replays an exhaustive sweep's MLflow runs. A real one of even
    experiments/study_smoke.yaml takes over a minute, so: its three configurations as child
    runs of study ``study_smoke``, tagged as dlas's sweep tags them (optuna.study_name,
    mlflow.parentRunId, dlas.sweep.overrides: the job's overrides)."""
    import json

    from mlflow import MlflowClient

    from dlas.metrics import LATENCY, TOP1

    (tmp / "mlruns").mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    experiment = client.create_experiment("study_smoke")
    study = {"optuna.study_name": "study_smoke"}
    parent = client.create_run(experiment, tags={**study, "dlas.sweep.parent": "true"})
    pruned = ["compression=weight_pruning", "compression.finetune_epochs=1"]
    for overrides, latency, top1 in [
        (["compression=dense", "algorithm=direct"], 0.050, 0.72),
        ([*pruned, "algorithm=direct"], 0.043, 0.81),
        ([*pruned, "algorithm=sparse_gemm"], 0.084, 0.81),
    ]:
        tags = {
            **study,
            "mlflow.parentRunId": parent.info.run_id,
            "dlas.sweep.overrides": json.dumps(["+experiment=study_smoke", *overrides]),
        }
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_metric(run_id, LATENCY, latency)
        client.log_metric(run_id, TOP1, top1)
        client.set_terminated(run_id)
    client.set_terminated(parent.info.run_id)


def _services(tmp: Path) -> None:
    from tests.scaleout import services

    reason = services.missing_reason()
    if reason:
        pytest.skip(reason)


def _perf(tmp: Path) -> None:
    """Linux perf, allowed to sample (root, or perf_event_paranoid <= 1)."""
    if shutil.which("perf") is None:
        pytest.skip("thread_idle.py needs Linux perf (Debian: apt-get install linux-perf)")
    probe = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-o", str(tmp / "probe.data"), "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"perf may not sample here: {probe.stderr.strip()[:200]}")


# What a script needs before it runs (a recorded study, services, a tool).
PREPARE: dict[str, Callable[[Path], None]] = {
    "search.py": _recorded_study,
    "scaleout.py": _services,
    "thread_idle.py": _perf,
}


def _param(name: str) -> object:
    marks = [pytest.mark.slow] * (name in SLOW) + [pytest.mark.scaleout] * (name in SCALEOUT)
    return pytest.param(name, marks=marks, id=name.removesuffix(".py"))


def test_every_benchmark_has_smoke_args() -> None:
    """A new benchmark script cannot be added without its smoke test (and no stale entries)."""
    assert BENCHMARKS, "no benchmark scripts found"
    missing = sorted(set(BENCHMARKS) - set(SMOKE_ARGS))
    assert not missing, f"benchmarks without an entry in SMOKE_ARGS: {missing}"
    stale = sorted(set(SMOKE_ARGS) - set(BENCHMARKS))
    assert not stale, f"SMOKE_ARGS entries for scripts that no longer exist: {stale}"
    assert set(PREPARE) | SLOW | SCALEOUT <= set(BENCHMARKS)


@pytest.mark.parametrize("script", [_param(n) for n in BENCHMARKS])
def test_benchmark_runs(script: str, tmp_path: Path) -> None:
    if script not in SMOKE_ARGS:
        pytest.fail(f"{script}: no entry in SMOKE_ARGS")
    if script in PREPARE:
        PREPARE[script](tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in SMOKE_ARGS[script]]
    # scaleout.py's PostgreSQL runs as user postgres, which cannot enter pytest's root-only
    # tmp_path: it keeps the system's temporary folder (and removes its own folder there).
    tmp = None if script in SCALEOUT else tmp_path
    proc = _run([sys.executable, str(REPO / "benchmarks" / script), *args], tmp)
    assert proc.returncode == 0, (
        f"benchmarks/{script} {' '.join(args)} exited {proc.returncode}:\n{_tail(proc.stdout)}"
    )


def _benchmark(name: str = "_libraries") -> ModuleType:
    """A benchmark module (by default the shared helpers), imported by name as the scripts
    import each other."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_peer_layers_finds_every_conv_kernel_of_a_blocked_build() -> None:
    """Blocked kernels read and write N[C/16]HW[16] activations: each still gets its layer key
    (it used to match only NCHW kernels, and a blocked build's rows all read 0 ms)."""

    from dlas.algorithms import lower
    from dlas.compiler.export import export
    from dlas.devices.local_cpu import host_target

    peer_layers, peers = _benchmark("peer_layers"), _benchmark("peers")
    model, spec, _ = peers.prepare("tiny_cnn", 32)
    target = host_target(2)
    mod = lower(export(model, spec), "blocked", target).mod
    convs = [gv.name_hint for gv in mod.functions if "conv" in gv.name_hint]
    keys = peer_layers.dlas_keys(mod)
    assert convs and sorted(keys) == sorted(convs)
    assert {key[0] for key in keys.values()} >= {3, 16}  # the stem's NCHW input, then blocks


def test_peer_layers_counts_the_nodes_ort_runs_after_a_conv_with_that_conv() -> None:
    """ORT runs SiLU and residual adds as nodes of their own after the conv, where dlas's conv
    kernel computes them: they join that conv's layer, and only they."""
    from onnx import helper

    peer_layers = _benchmark("peer_layers")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("QuickGelu", ["c1"], ["a1"], name="silu1"),
        helper.make_node("ReduceMean", ["a1"], ["m"], name="mean"),
        helper.make_node("Conv", ["m", "w2"], ["c2"], name="gate_conv"),
        helper.make_node("Sigmoid", ["c2"], ["g"], name="gate"),
        helper.make_node("Mul", ["a1", "g"], ["gated"], name="gating"),
        helper.make_node("Conv", ["gated", "w3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "x"], ["sum"], name="residual"),
        helper.make_node("Mul", ["x", "c3"], ["other"], name="reads_the_input_first"),
    ]
    joined = peer_layers.joined_nodes(nodes)
    assert joined == {
        "silu1": "conv1",
        "gate": "gate_conv",
        "gating": "conv1",
        "residual": "conv3",
    }
    key = (8, 4, 8, 4)
    events = [
        {"cat": "Node", "name": f"{node}_kernel_time", "dur": dur, "args": args}
        for node, dur, args in [
            ("conv1", 3000, _conv_args(key)),
            ("silu1", 1000, {"op_name": "QuickGelu"}),
            ("mean", 500, {"op_name": "ReduceMean"}),
        ]
    ]
    per_key, _, other = peer_layers.ort_layers(events, {key}, joined)
    assert per_key == {key: 4.0} and other == 0.5


def _conv_args(key: tuple[int, int, int, int]) -> dict:
    """An ORT profiler event's arguments for a 1x1 conv of layer ``key``."""
    ic, size, oc, _ = key
    return {
        "op_name": "Conv",
        "input_type_shape": [{"float": [1, ic, size, size]}, {"float": [oc, ic, 1, 1]}],
        "output_type_shape": [{"float": [1, oc, size, size]}],
    }


def test_benchmark_models_are_refused_where_the_logits_do_not_depend_on_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """peers.prepare's models are what every benchmark checks its builds against: a model whose
    logits barely move with the input (MobileNetV2's did, 1e-7) would pass a broken build."""
    import torch

    peers = _benchmark("peers")
    model, spec, x = peers.prepare("tiny_cnn", 32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
        moved = model(torch.randn_like(torch.from_numpy(x)))
    assert (moved - ref).abs().max() > peers.MIN_REFERENCE_CHANGE * ref.abs().max()

    class Constant(torch.nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return torch.ones(batch.shape[0], 10) + 0 * batch.mean()

    monkeypatch.setattr(peers, "create_model", lambda *args, **kwargs: Constant())
    with pytest.raises(RuntimeError, match="barely depend on the input"):
        peers.prepare("tiny_cnn", 32)


def test_round_robin_warms_each_system_up_on_its_own_calls_before_timing_it() -> None:
    # A pause instead let the previous system's spinning workers slow ONNX Runtime 2-4x.
    log: list[str] = []
    systems = {name: (lambda n=name: log.append(n)) for name in ("a", "b")}
    times = _benchmark().round_robin(systems, rounds=2, calls=3, warmup_s=0.02)
    assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6}
    blocks = [log[0]]
    for name in log[1:]:
        if name != blocks[-1]:
            blocks.append(name)
    assert blocks == ["a", "b", "a", "b"]  # interleaved, one block per system and round
    assert log.count("a") > 6 + 2  # more untimed calls than the one a pause gave


def test_thread_idle_charges_a_workers_wait_to_the_kernel_the_main_thread_is_in() -> None:
    """The worker waits through the second half of kernel a (its share ran short) and none of
    kernel b: a's wait is counted, b's is not, and the table says so."""
    main, worker = 1, 2
    found = [(main, t, "K:a") for t in range(10)] + [(main, t, "K:b") for t in range(10, 20)]
    found += [(worker, t + 0.5, "K:a" if t < 5 else "wait") for t in range(10)]
    found += [(worker, t + 0.5, "K:b") for t in range(10, 20)]
    lines = _benchmark("thread_idle").table(main, found, top=5).splitlines()
    assert "25.0% waiting while the main thread was in a kernel" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["a"] == ["10", "5", "5", "0.50"]
    assert rows["b"] == ["10", "10", "0", "0.00"]
