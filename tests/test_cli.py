"""The command line as users type it: `python -m dlas.run ...` in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dlas.cli import options
from dlas.layers import GROUPS
from tests.conftest import tiny_overrides


def dlas_run(
    tmp: Path, *args: str, start: tuple[str, ...] = ("-m", "dlas.run")
) -> subprocess.CompletedProcess:
    """``python -m dlas.run args`` in ``tmp`` (``start``: how Python starts dlas.run)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, *start, *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_help_shows_dlas_its_layers_and_experiments(tmp_path):
    out = dlas_run(tmp_path, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("dlas:") and "powered by Hydra" not in out.stdout
    for group in GROUPS:  # every layer, with its options and the default marked
        assert re.search(rf"^{group}: .*\b{options(group)[0]}\b", out.stdout, re.M), group
    assert re.search(r"^compression: .*\bdense\*", out.stdout, re.M)
    assert "schema/" not in out.stdout  # the internal schema groups are not options
    assert re.search(r"^experiment .*\bdigits_slice\b", out.stdout, re.M)


def test_cfg_job_behaves_as_hydra(tmp_path):
    out = dlas_run(tmp_path, "--cfg", "job", "model=mobilenet_v2", "device.timed_runs=50")
    assert out.returncode == 0
    assert "name: mobilenet_v2" in out.stdout and "timed_runs: 50" in out.stdout


def test_bad_value_fails_before_any_run_is_recorded(tmp_path):
    """And before the stack's imports (TVM, torchvision, MLflow's store: ~9 s): dlas.run as
    ``python -m dlas.run`` starts it, with the stack's import made to fail loudly."""
    stack = "import dlas.run as r, sys; r._import_stack = lambda: sys.exit('stack import')"
    run = f"{stack}; sys.argv[0] = 'dlas'; r.main()"
    mlruns = f"paths.mlruns_dir={tmp_path / 'mlruns'}"
    out = dlas_run(tmp_path, "device.timed_runs=0", mlruns, start=("-c", run))
    assert out.returncode != 0 and "device.timed_runs=0 is invalid" in out.stderr
    assert "stack import" not in out.stderr
    assert not (tmp_path / "mlruns").exists()


def test_sweep_records_each_job_and_survives_a_failing_one(tmp_path):
    args = tiny_overrides(tmp_path, "device.timed_runs=3")
    out = dlas_run(
        tmp_path, "-m", *args, "dataset=digits,cifar10", f"dataset.root={tmp_path / 'no-cifar'}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dlas")
    runs = client.search_runs([exp.experiment_id], "tags.`dlas.dataset` != ''")
    status = {r.data.tags["dlas.dataset"]: r.info.status for r in runs}
    assert status == {"digits": "FINISHED", "cifar10": "FAILED"}


def _seconds_to_load_the_registries() -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from dlas.layers import LAYERS; [e.registered() for e in LAYERS]"],
        check=True,
    )
    return time.perf_counter() - start


def test_an_unregistered_name_fails_fast_listing_the_options_and_records_nothing(tmp_path):
    # "Fast": no work beyond loading the code that lists the options (every layer's registry),
    # timed just before and just after under the same load: the other test worker's compiles
    # slow both up to 4x, and one loading alone took 11.5 s and 25.7 s in a row.
    before = _seconds_to_load_the_registries()
    start = time.perf_counter()
    out = dlas_run(tmp_path, "tuning.name=metaschedul", f"paths.mlruns_dir={tmp_path / 'mlruns'}")
    seconds = time.perf_counter() - start
    loading = max(before, _seconds_to_load_the_registries())
    assert out.returncode != 0
    assert "tuning.name='metaschedul'" in out.stderr and "untuned" in out.stderr
    assert not (tmp_path / "mlruns").exists()
    print(f"refused in {seconds:.1f} s; loading the registries takes up to {loading:.1f} s")
    assert seconds < 1.5 * loading + 3


def test_a_torchvision_name_as_model_option_gets_the_command_that_works(tmp_path):
    out = dlas_run(tmp_path, "model=shufflenet_v2_x0_5")
    assert out.returncode == 2
    assert "model=torchvision model.name=shufflenet_v2_x0_5" in out.stderr


def test_the_stack_is_imported_once_frozen_and_the_collector_left_on():
    """dlas.run imports the layers with the collector paused (a rerun's startup): it must be
    on again afterwards, or a long sweep in one process would never free a cycle."""
    import gc

    from dlas import run

    run._import_stack.cache_clear()
    frozen_before = gc.get_freeze_count()
    run._import_stack()
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen_before
    assert {"tvm", "torchvision", "mlflow.store.tracking.sqlalchemy_store"} <= set(sys.modules)


@pytest.mark.parametrize("collecting", [True, False])
def test_importing_dlas_leaves_the_collector_as_it_found_it(collecting):
    """dlas/__init__ pauses the collector while torch imports; a user's choice stands after."""
    code = (
        "import gc, sys\n"
        f"{'' if collecting else 'gc.disable()'}\n"
        "import dlas\n"
        "assert 'torch' in sys.modules\n"
        "print(gc.isenabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(collecting)
