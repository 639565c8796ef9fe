"""Tuning records: one persistent MetaSchedule database per target, shared by every run.

``<cache_dir>/tuning/<target-key>/database_{workload,tuning_record}.json`` holds every trial
ever measured for that target. A workload is a fused PrimFunc (its shapes, dtype and the
algorithm's compute are all part of it), so a conv seen in ResNet18 is reused by any model
that has the same conv. Beside it, ``dlas_tuned.json`` says what budget each workload was
already tuned with, so an identical (or smaller) request tunes nothing again even for
workloads whose search space ran out before the budget did.

Jobs that share ``cache_dir`` (parallel launchers, hosts on a shared file system) take turns
on a database (:meth:`RecordStore.exclusive`): its tuning records name their workload by
line number in the workload file, as counted by the job that loaded it, so two jobs that
loaded the same files and both committed new workloads would attach records to the wrong ones.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from dlas.cache import config_key, entry_lock, write_atomic

TUNED_FILE = "dlas_tuned.json"
TABLE_FILE = "tasks.json"
_WORKLOAD_FILE = "database_workload.json"
_RECORD_FILE = "database_tuning_record.json"
VERIFIED_DIR = "verified"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


# The tensor intrinsics dlas's schedules register, which traces name, and what the traces of
# its default schedules hold: bumped when either changes (2: AMX calls over several channel
# blocks; 3: wide layers' weights as A tiles, amx_direct; 4: the default schedules' stack
# mark; 5: depthwise tasks of several register tiles, direct's pointwise form; 6: partial
# sums for means over planes, row-split channel tiles, pointwise chunks of 32 channels, odd
# channel blocks in one tile; 7: pointwise tiles of several vectors on odd-vector planes),
# so a store of traces that no longer replay as intended is left on disk and a fresh one is
# used.
INTRINSICS_VERSION = 7


def target_key(target: tvm.target.Target) -> str:
    """Records are only valid for the target (and the TVM and dlas intrinsics that replay
    their traces)."""
    return config_key(
        {"target": str(target), "tvm": tvm.__version__, "intrinsics": INTRINSICS_VERSION}
    )


def best_seconds(record: Any) -> float | None:
    """Mean measured latency of a record; None for failed or unmeasured trials."""
    secs = [float(s) for s in (record.run_secs or [])]
    # MetaSchedule stores failed runs as 1e10 s.
    if not secs or max(secs) >= 1e9:
        return None
    return sum(secs) / len(secs)


class RecordStore:
    """A MetaSchedule JSON database plus what dlas knows about how each workload was tuned."""

    def __init__(
        self, path: str | Path, module_equality: str = "structural", create: bool = True
    ) -> None:
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / _WORKLOAD_FILE).exists():
            raise FileNotFoundError(
                f"{self.path} holds no MetaSchedule records ({_WORKLOAD_FILE} missing)"
            )
        # A trace's tensorize step must find its intrinsic while the file loads.
        from dlas.algorithms import amx, amx_direct

        for records in self.path.glob(f"**/{_RECORD_FILE}"):
            text = records.read_text()
            amx.register_named(text)
            amx_direct.register_named(text)
        self.database = ms.database.JSONDatabase(
            work_dir=str(self.path), allow_missing=create, module_equality=module_equality
        )
        # Each task's best record and default schedule timed again back to back
        # (seeding.verify_against_defaults): where it has a workload, its best record wins.
        verified = self.path / VERIFIED_DIR
        if create:
            verified.mkdir(exist_ok=True)
        self.verified = (
            ms.database.JSONDatabase(
                work_dir=str(verified), allow_missing=True, module_equality=module_equality
            )
            if create or verified.is_dir()
            else ms.database.MemoryDatabase(module_equality=module_equality)
        )

    @classmethod
    @contextmanager
    def exclusive(
        cls, cache_root: str | Path, target: tvm.target.Target, module_equality: str = "structural"
    ) -> Iterator[tuple[RecordStore, float]]:
        """The shared store of ``target``, loaded and used by this job alone for the block
        (every other job's commits are in it); yields it and the seconds spent waiting."""
        path = Path(cache_root) / "tuning" / target_key(target)
        with entry_lock(path / "database") as waited:
            yield cls(path, module_equality), waited

    # --- queries ---------------------------------------------------------------------
    def workload_key(self, mod: tvm.IRModule) -> str | None:
        """The database's structural hash of ``mod``, or None if it was never committed."""
        if not self.database.has_workload(mod):
            return None
        return str(self.database.commit_workload(mod).as_json()[0])

    def records(self, mod: tvm.IRModule, top_k: int = 1 << 30) -> list[Any]:
        """Successful records of ``mod``'s workload, best first."""
        if not self.database.has_workload(mod):
            return []
        workload = self.database.commit_workload(mod)
        found = self.database.get_top_k(workload, top_k)
        return [r for r in found if best_seconds(r) is not None]

    def best_record(self, mod: tvm.IRModule) -> Any | None:
        """The record a build applies: the verified winner, else the database's best."""
        if self.verified.has_workload(mod):
            found = self.verified.get_top_k(self.verified.commit_workload(mod), 1)
            if found:
                return found[0]
        best = self.records(mod, 1)
        return best[0] if best else None

    def applied(self) -> ms.Database:
        """The database a build applies records from (:meth:`best_record`'s order)."""
        return ms.database.OrderedUnionDatabase(self.verified, self.database)

    def tuned_share(self, mod: tvm.IRModule) -> float:
        """The largest per-task budget a dlas run has tuned this workload with (0: never)."""
        key = self.workload_key(mod)
        return float(self._tuned().get(key, {}).get("share", 0.0)) if key else 0.0

    # --- updates ---------------------------------------------------------------------
    def mark_tuned(self, tuned: dict[str, tvm.IRModule], share: float) -> None:
        """Remember that these workloads (by task name) were tuned with ``share`` trials each.
        Read-merge-write: a concurrent run that loses this race only tunes again."""
        table = self._tuned()
        for name, mod in tuned.items():
            key = str(self.database.commit_workload(mod).as_json()[0])
            entry = table.setdefault(key, {"share": 0.0, "task": name})
            entry["share"] = max(float(entry["share"]), share)
        write_atomic(self.path / TUNED_FILE, json.dumps(table, indent=1).encode())

    def mark_seeded(self, mods: dict[str, tvm.IRModule], seconds: dict[str, float]) -> None:
        """Remember the measured latency of each task's default schedule: when it was seeded,
        then as timed side by side with the best record (the figure a run's table shows)."""
        table = self._tuned()
        for name, secs in seconds.items():
            key = str(self.database.commit_workload(mods[name]).as_json()[0])
            table.setdefault(key, {"share": 0.0, "task": name})["default_us"] = secs * 1e6
        write_atomic(self.path / TUNED_FILE, json.dumps(table, indent=1).encode())

    def default_us(self, mod: tvm.IRModule) -> float | None:
        """The default schedule's latest latency if a dlas run seeded this workload with it."""
        key = self.workload_key(mod)
        value = self._tuned().get(key, {}).get("default_us") if key else None
        return float(value) if value is not None else None

    def export(self, mods: dict[str, tvm.IRModule], dest: str | Path) -> int:
        """Copy the record a build applies for each workload (:meth:`best_record`) into a fresh
        database at ``dest`` (what a run logs: enough to rebuild it with ``tuning.records``).
        Returns the count."""
        dest = Path(dest)
        for name in (_WORKLOAD_FILE, _RECORD_FILE):
            (dest / name).unlink(missing_ok=True)
        dest.mkdir(parents=True, exist_ok=True)
        out = ms.database.JSONDatabase(work_dir=str(dest))
        count = 0
        for mod in mods.values():
            rec = self.best_record(mod)
            if rec is None:
                continue
            out.commit_tuning_record(
                ms.database.TuningRecord(
                    rec.trace, out.commit_workload(mod), rec.run_secs, rec.target, rec.args_info
                )
            )
            count += 1
        return count

    def task_rows(
        self, tasks: list[Any], new_trials: dict[str, int], from_records: bool
    ) -> list[dict[str, Any]]:
        """The per-task table a run logs (``tasks.json``): where each task's schedule came
        from, its trials and records, the applied record's and the default's latency."""
        rows = []
        for task in tasks:
            mod = task.dispatched[0]
            records = self.records(mod)
            applied = self.best_record(mod)
            best = best_seconds(applied) if applied is not None else None
            if not records:
                source = "default-schedule"
            elif new_trials.get(task.task_name):
                source = "tuned"
            else:
                source = "records" if from_records else "database"
            default = self.default_us(mod)
            rows.append(
                {
                    "task": task.task_name,
                    "weight": int(task.weight),
                    "source": source,
                    "new_trials": new_trials.get(task.task_name, 0),
                    "records": len(records),
                    "best_us": round(best * 1e6, 3) if best is not None else None,
                    "default_schedule_us": round(default, 3) if default is not None else None,
                }
            )
        return rows

    def _tuned(self) -> dict[str, dict[str, Any]]:
        path = self.path / TUNED_FILE
        return json.loads(path.read_text()) if path.exists() else {}


def resolve_records(spec: str, download_dir: str | Path | None = None) -> Path:
    """A records folder from ``tuning.records``: a folder holding the database (or a run's
    ``tuning/`` artifacts inside it), an MLflow run id, or a ``runs:/<id>/tuning`` URI."""
    path = Path(spec).expanduser()
    if path.is_dir():
        for candidate in (path, path / "tuning"):
            if (candidate / _WORKLOAD_FILE).exists():
                return candidate.resolve()
        raise FileNotFoundError(f"tuning.records={spec}: no {_WORKLOAD_FILE} in it or in tuning/")
    if _RUN_ID.match(spec) or spec.startswith(("runs:/", "models:/", "mlflow-artifacts:")):
        import mlflow

        # Logged artifacts never change: one download per run (or URI) is enough.
        dst = Path(download_dir or tempfile.gettempdir()) / "records" / config_key(spec)
        if not dst.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(dst.parent)))
            if _RUN_ID.match(spec):
                mlflow.artifacts.download_artifacts(
                    run_id=spec, artifact_path="tuning", dst_path=str(partial)
                )
            else:
                mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(partial))
            try:
                partial.rename(dst)
            except OSError:  # a concurrent run downloaded the same records first
                shutil.rmtree(partial, ignore_errors=True)
        return resolve_records(str(dst))
    raise FileNotFoundError(
        f"tuning.records={spec!r} is neither a folder of MetaSchedule records nor an MLflow run "
        "id (32 hex digits) or runs:/<id>/tuning URI"
    )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
