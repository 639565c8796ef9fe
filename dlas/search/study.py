"""The Optuna study behind a guided sweep: storage, name, sampler, resume bookkeeping."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "random", "grid")


def default_storage(mlruns_dir: str) -> str:
    """SQLite next to MLflow's own database: ``<paths.mlruns_dir>/optuna.db``."""
    root = Path(mlruns_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'optuna.db'}"


def redact(url: str) -> str:
    """A storage URL fit for a tag: no password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def default_study_name(
    fixed: Sequence[str], space: Sequence[str], objective: str, max_accuracy_drop: float | None
) -> str:
    """Same command → same name, so rerunning it resumes the study."""
    key = json.dumps([sorted(fixed), sorted(space), objective, max_accuracy_drop])
    return "dlas-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def create_sampler(
    name: str, seed: int | None, n_startup_trials: int
) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Independent TPE (Optuna's default): on the digits_slice replay it needed fewer runs
        # than multivariate+group, which splits the conditional space into small groups.
        # constant_liar keeps parallel workers from proposing the same point.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=n_startup_trials, constant_liar=True
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup_trials))
    if name in ("random", "grid"):  # grid enqueues every point; the sampler never decides
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler={name!r}: expected one of {', '.join(SAMPLERS)}")


def open_study(
    storage: str | None, name: str, directions: Sequence[str], sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        load_if_exists=True,
        directions=list(directions),
        sampler=sampler,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != list(directions):
        raise ValueError(
            f"study {name!r} in {redact(storage or 'memory')} optimises {stored}, not "
            f"{list(directions)}: pick another hydra.sweeper.study_name"
        )
    return study


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_interrupted(study: optuna.Study) -> list[int]:
    """RUNNING trials left by a dead dlas process on this host become FAIL, so a resumed study
    neither waits for them nor counts them as done. Other hosts' workers are left alone."""
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get("dlas.worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if (
            owner_host == host
            and pid.isdigit()
            and int(pid) != os.getpid()
            and not _alive(int(pid))
        ):
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    if failed:
        log.warning("marked interrupted trials %s as FAIL", failed)
    return failed


def finished_by_signature(study: optuna.Study) -> dict[str, Any]:
    """signature → the trial that ran (or was found invalid for) that configuration. Trials
    failed by :func:`fail_interrupted` never reported a status: they may run again."""
    out: dict[str, Any] = {}
    for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ):
        sig = t.user_attrs.get("dlas.signature")
        if not sig or sig in out or "dlas.duplicate_of" in t.user_attrs:
            continue
        if t.state != TrialState.FAIL or "dlas.status" in t.user_attrs:
            out[sig] = t
    return out


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up ``n_trials``: all but the enqueued ones not yet started."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
