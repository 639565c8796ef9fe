"""Full runs against a real loopback TVM RPC tracker and servers (see conftest.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest

from dlas import pipeline
from dlas.config import validate
from dlas.devices import DeviceError, DeviceUnavailableError, Program, create_device
from dlas.devices.cross import elf_machine
from dlas.devices.loopback import free_port
from dlas.devices.rpc import RPCDevice
from tests.devices import session_timeout

pytestmark = pytest.mark.rpc


def run_overrides(cache: Path, mlruns: Path, *extra: str) -> list[str]:
    return [
        "model=tiny_cnn",
        "dataset.train.epochs=1",
        "dataset.test_limit=16",
        "device.timed_runs=3",
        "eval.compare_samples=4",
        f"paths.cache_dir={cache}",
        f"paths.mlruns_dir={mlruns}",
        *extra,
    ]


def rpc_overrides(loopback, key: str | None = None, *extra: str) -> list[str]:
    return [
        "device=rpc",
        f"device.tracker={loopback.tracker}",
        f"device.key={key or loopback.key}",
        *extra,
    ]


def runs(mlruns: Path) -> list:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dlas")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_pipeline_through_the_tracker_matches_the_local_run(
    compose_cfg, loopback, shared_cache, tmp_path
):
    mlruns = tmp_path / "mlruns"
    remote = pipeline.run(
        compose_cfg(*run_overrides(shared_cache, mlruns, *rpc_overrides(loopback)))
    )
    local = pipeline.run(compose_cfg(*run_overrides(shared_cache, mlruns, "device=local_cpu")))
    for key in ("latency/median_ms", "accuracy/top1", "compare/max_abs_logit_diff"):
        assert key in remote, key
    # Same model, same code generator, same CPU: the board's answers are the local ones.
    assert remote["accuracy/top1"] == local["accuracy/top1"]
    assert remote["accuracy/top5"] == local["accuracy/top5"]
    assert remote["compare/max_abs_logit_diff"] == pytest.approx(
        local["compare/max_abs_logit_diff"], rel=1e-4, abs=1e-5
    )
    assert "latency/pytorch_eager_median_ms" not in remote  # eager runs here, not on the board
    finished = {r.data.tags["dlas.device"]: r for r in runs(mlruns)}
    assert finished["rpc"].info.status == "FINISHED"
    assert loopback.tracker in finished["rpc"].data.tags["device.reach"]
    assert finished["rpc"].data.tags["device.remote_cpu"]


def test_compile_only_never_connects_and_measures_nothing(compose_cfg, shared_cache, tmp_path):
    # Nothing listens on this port: the run may only succeed by never connecting.
    dead = f"127.0.0.1:{free_port()}"
    mlruns = tmp_path / "mlruns"
    metrics = pipeline.run(
        compose_cfg(
            *run_overrides(
                shared_cache,
                mlruns,
                "device=hikey_cpu",
                f"device.tracker={dead}",
                "device.measure=false",
            )
        )
    )
    assert not [k for k in metrics if k.startswith("latency/")]
    assert "accuracy/top1" not in metrics and "compare/max_abs_logit_diff" not in metrics
    (run,) = runs(mlruns)
    assert run.info.status == "FINISHED"
    assert not [k for k in run.data.metrics if k.startswith("latency/")]
    library = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="compiled/model.so",
        tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}",
        dst_path=str(tmp_path),
    )
    assert elf_machine(library) == "aarch64"


def test_wrong_key_names_the_key_and_the_registered_ones(compose_cfg, loopback, tmp_path):
    cfg = compose_cfg(
        *run_overrides(
            tmp_path / "cache", tmp_path / "mlruns", *rpc_overrides(loopback, "no-such-board")
        )
    )
    with pytest.raises(DeviceUnavailableError) as err:
        pipeline.run(cfg)
    message = str(err.value)
    assert "no-such-board" in message and loopback.key in message
    assert f"rpc_server --tracker {loopback.tracker} --key no-such-board" in message
    assert not runs(tmp_path / "mlruns")  # refused before a run was even recorded


def test_unreachable_tracker_fails_before_training(compose_cfg, tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    cfg = compose_cfg(
        *run_overrides(
            tmp_path / "cache", tmp_path / "mlruns", "device=xavier", f"device.tracker={dead}"
        )
    )
    start = time.monotonic()
    with pytest.raises(DeviceUnavailableError) as err:
        pipeline.run(cfg)
    assert time.monotonic() - start < 15
    message = str(err.value)
    assert dead in message and "'xavier'" in message
    assert "python -m tvm.exec.rpc_server --tracker" in message
    assert not (tmp_path / "cache").exists()  # no model was trained


def test_server_killed_mid_measurement_fails_the_run(
    compose_cfg, loopback, shared_cache, tmp_path, monkeypatch
):
    import dlas.measure

    victim = loopback.victims["dlas-killed"]
    timed = dlas.measure.measure_latency

    def kill_then_time(runner, *args, **kwargs):
        victim.signal(signal.SIGKILL)  # the server and its session child
        return timed(runner, *args, **kwargs)

    monkeypatch.setattr(dlas.measure, "measure_latency", kill_then_time)
    mlruns = tmp_path / "mlruns"
    cfg = compose_cfg(
        *run_overrides(
            shared_cache, mlruns, *rpc_overrides(loopback, "dlas-killed", "device.timeout_s=60")
        )
    )
    start = time.monotonic()
    with pytest.raises(DeviceError, match="dlas-killed"):
        pipeline.run(cfg)
    assert time.monotonic() - start < 120
    (run,) = runs(mlruns)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.type"] == "DeviceError"
    assert f"RPC tracker {loopback.tracker}" in run.data.tags["error.message"]
    assert "latency/median_ms" not in run.data.metrics


def _small_program(device, tmp_path: Path) -> tuple[Program, np.ndarray]:
    from tests.devices.test_cross_build import build_for

    executable, path = build_for(device, tmp_path, "small")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    return Program(executable=executable, library=str(path)), x


def test_hung_server_hits_the_timeout(compose_cfg, loopback, tmp_path):
    victim = loopback.victims["dlas-hung"]
    device = create_device(
        validate(compose_cfg(*rpc_overrides(loopback, "dlas-hung", "device.timeout_s=4"))).device
    )
    device.check_available()
    program, x = _small_program(device, tmp_path)
    start = time.monotonic()
    # The server cannot end a session while stopped: the client's own deadline does.
    with pytest.raises(DeviceError, match=r"timeout_s=4\) did not finish within 14 s"):  # noqa: SIM117
        with device.load(program) as runner:
            runner.run(x)
            victim.signal(signal.SIGSTOP)  # the board stops answering mid-run
            runner.time(x, warmup=1, repeat=100)
    assert time.monotonic() - start < 30


def test_session_timeout_ends_the_session_and_the_server_serves_on(compose_cfg, loopback, tmp_path):
    device = create_device(validate(compose_cfg(*rpc_overrides(loopback))).device)
    device.check_available()
    program, _ = _small_program(device, tmp_path)
    scenario = [sys.executable, "-X", "faulthandler", "-m", session_timeout.__name__]
    crashes = []
    for _ in range(3):
        child = subprocess.run(
            [*scenario, loopback.tracker, loopback.key, str(program.library)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).parents[2],
        )
        if child.returncode == 0:
            break
        # A Python-level failure is dlas's: it fails the test at once. A bare exit is TVM's
        # client ending the process on the race that session_timeout.py describes.
        assert "Traceback" not in child.stderr, child.stderr
        crashes.append(f"status {child.returncode}: {child.stderr.strip()[-300:]!r}")
    else:
        pytest.fail(f"TVM's RPC client ended the process in every try: {crashes}")
    if crashes:
        warnings.warn(f"TVM's RPC client ended the process first: {crashes}", stacklevel=1)
    outcome = json.loads(child.stdout.splitlines()[-1])
    # The client sees the server's "session has expired", or the pipe it closed: either way,
    # a DeviceError that says the session outlived device.timeout_s.
    assert outcome["error"], "the session outlived device.timeout_s without an error"
    short = session_timeout.SHORT_TIMEOUT_S
    assert re.search(rf"timeout_s={short}\) failed: .*ends a session after", outcome["error"])
    assert outcome["elapsed_s"] < 30
    assert outcome["next_session_shape"] == [1, 10]


def test_direct_server_results_match_this_host(compose_cfg, loopback, tmp_path):
    direct = [
        "device=rpc",
        "device.host=127.0.0.1",
        f"device.port={loopback.direct.port}",
        "device.key=dlas-direct",
        "device.num_threads=1",
    ]
    device = create_device(validate(compose_cfg(*direct)).device)
    device.check_available()
    assert "RPC server 127.0.0.1" in device.describe()["device.reach"]
    program, x = _small_program(device, tmp_path)
    local = create_device(validate(compose_cfg("device=local_cpu")).device)
    with local.load(local.load_library(program.library)) as runner:
        expected = runner.run(x)
    with device.load(Program(library=program.library)) as runner:
        got = runner.run(x)
        samples = runner.time(x, warmup=1, repeat=5)
    np.testing.assert_array_equal(got, expected)  # the same library on the same CPU
    assert len(samples) == 5 and all(s > 0 for s in samples)

    # The block closed the session, so the server (one client at a time) is free again.
    wrong = create_device(validate(compose_cfg(*direct[:-2], "device.key=wrong")).device)
    with pytest.raises(DeviceUnavailableError, match="refused key 'wrong'"):
        wrong.check_available()


def test_metaschedule_runner_measures_on_the_board(compose_cfg, loopback, tmp_path):
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    a = te.placeholder((64,), "float32", name="a")
    add = te.create_prim_func([a, te.compute((64,), lambda i: a[i] + 1.0, name="b")])

    device = create_device(validate(compose_cfg(*rpc_overrides(loopback))).device)
    assert isinstance(device, RPCDevice)
    runner = device.metaschedule_runner()
    assert isinstance(runner, ms.runner.RPCRunner)
    assert (runner.rpc_config.tracker_port, runner.rpc_config.tracker_key) == (
        loopback.tracker_port,
        loopback.key,
    )
    local = create_device(validate(compose_cfg("device=local_cpu")).device)
    assert local.metaschedule_runner() is None

    # Built here rather than by a LocalBuilder, whose worker start-up alone can exceed its
    # 30 s limit on two busy cores; the runner's workers are what this test is about.
    library = tmp_path / "candidate.so"
    tvm.compile(tvm.IRModule({"main": add}), target={"kind": "llvm"}).export_library(library)
    args = ms.arg_info.ArgInfo.from_prim_func(add)
    (future,) = runner.run([ms.runner.RunnerInput(str(library), "cpu", args)])
    result = future.result()
    assert result.error_msg is None, result.error_msg
    assert result.run_secs and all(float(s) > 0 for s in result.run_secs)
