"""The shared record store: keys, budgets, artifacts, and what tuning.records accepts."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import tvm

from dlas.tuning.records import RecordStore, best_seconds, resolve_records, target_key
from tests.tuning.helpers import mlp_module


def task_mods(mod: tvm.IRModule) -> dict[str, tvm.IRModule]:
    from tvm.s_tir import meta_schedule as ms

    from tests.tuning.helpers import host_target

    return {
        t.task_name: t.dispatched[0] for t in ms.relax_integration.extract_tasks(mod, host_target())
    }


def test_target_key_separates_targets():
    a = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    b = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
    assert target_key(a) == target_key(a) != target_key(b)


def test_failed_trials_have_no_latency():
    assert best_seconds(SimpleNamespace(run_secs=[1e10])) is None
    assert best_seconds(SimpleNamespace(run_secs=None)) is None
    assert best_seconds(SimpleNamespace(run_secs=[1e-3, 3e-3])) == pytest.approx(2e-3)


def test_tuned_share_is_remembered_per_workload(tmp_path):
    mods = task_mods(mlp_module())
    store = RecordStore(tmp_path)
    assert all(store.tuned_share(m) == 0 for m in mods.values())
    store.mark_tuned({"dense1": mods["dense1"]}, 12.5)
    store.mark_tuned({"dense1": mods["dense1"]}, 4.0)  # never lowered by a smaller run
    reopened = RecordStore(tmp_path)
    assert reopened.tuned_share(mods["dense1"]) == 12.5
    assert reopened.tuned_share(mods["fused_dense_relu"]) == 0


def test_records_spec_accepts_folders_and_refuses_junk(tmp_path):
    RecordStore(tmp_path / "run" / "tuning")
    assert resolve_records(str(tmp_path / "run")) == (tmp_path / "run" / "tuning").resolve()
    assert resolve_records(str(tmp_path / "run" / "tuning")).name == "tuning"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no database_workload.json"):
        resolve_records(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="MLflow run id"):
        resolve_records("not-a-run")
    with pytest.raises(FileNotFoundError, match="holds no MetaSchedule records"):
        RecordStore(tmp_path / "empty", create=False)


def _commit_one_record(cache_root: Path, task: str, pause_s: float) -> None:
    """A job that tunes ``task`` into the shared store: loads it, works, commits."""
    from tvm.s_tir import meta_schedule as ms

    from tests.tuning.helpers import host_target

    mod = task_mods(mlp_module())[task]
    target = host_target()
    with RecordStore.exclusive(cache_root, target) as (store, _waited):
        time.sleep(pause_s)  # the other job has loaded the same files by now, if it could
        workload = store.database.commit_workload(mod)
        sch = tvm.s_tir.Schedule(mod)
        sch.get_loops(sch.get_sblock("T_matmul_NT"))  # top-k skips records with empty traces
        store.database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, workload, [1e-3], target, None)
        )


def test_concurrent_jobs_commit_to_the_shared_store_in_turn(tmp_path):
    """Records name their workload by its line in the workload file as the committing job
    counted it; two jobs that loaded the store together would both call their new workload
    line 0, and the reopened store would give one workload both records."""
    spawn = multiprocessing.get_context("spawn")
    jobs = [
        spawn.Process(target=_commit_one_record, args=(tmp_path, task, 3.0))
        for task in ("dense1", "fused_dense_relu")
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0]

    from tests.tuning.helpers import host_target

    (path,) = (tmp_path / "tuning").iterdir()
    assert path.name == target_key(host_target())
    reopened = RecordStore(path)
    mods = task_mods(mlp_module())
    assert [len(reopened.records(mods[t])) for t in ("dense1", "fused_dense_relu")] == [1, 1]
