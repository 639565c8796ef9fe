"""The Optuna study behind a guided sweep: storage, name, sampler, and what the stored trials
say about the study's progress, which is shared by every worker on the same storage.

Several workers (processes, hosts) may run one study. They agree through the storage alone:
- Opening: a fresh database is created by whichever worker gets there first; the schema and
  study-creation races of workers that start together are retried (:func:`open_study`). The
  worker whose ``create_study`` created the study is its *creator* (the unique study name makes
  that exactly one).
- Claims: a trial records its configuration (``dlas.signature``) before it runs; of the trials
  holding one configuration, the lowest-numbered live one runs it (:func:`claimed_by`).
- Budget: ``n_trials`` counts configurations (:func:`counts`), ranked by trial number, so two
  workers cannot both take the last slot (:func:`over_budget`).
- Liveness: Optuna's heartbeat (``RDBStorage(heartbeat_interval=...)``); a trial whose worker
  stopped beating is failed by any other worker (``optuna.storages.fail_stale_trials``) and its
  configuration re-enqueued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "random", "grid")
# Attributes of trials that ran nothing and count for nothing.
DUPLICATE, SURPLUS = "dlas.duplicate_of", "dlas.surplus"
# Set on the re-enqueued copy of a trial whose worker died.
RETRY_OF, ROLE = "dlas.retry_of", "dlas.role"
# Enqueued trials that run even past n_trials: retries replace a trial that did not count, and
# dense baselines are what the accuracy constraint needs (at most one per model).
EXEMPT_ROLES = ("dense baseline", "grid")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Workers that start together on an empty database race to create Optuna's tables.
OPEN_ATTEMPTS = 8
# Optuna warns that its heartbeat is meant for Study.optimize; Heartbeat below is the same
# mechanism for the sweeper's ask/tell.
warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)


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


def _retrying(what: str, action: Callable[[], Any]) -> Any:
    """``action()``, retried with jittered backoff on database errors: workers that start
    together race on Optuna's schema creation (PostgreSQL: ``UniqueViolation ...
    pg_type_typname_nsp_index``) and on the study's first rows."""
    import sqlalchemy.exc

    for attempt in range(OPEN_ATTEMPTS):
        try:
            return action()
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            delay = min(0.2 * 2**attempt, 5.0) * (0.5 + random.random())
            log.info("%s: %s; retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_storage(
    url: str | None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage | None:
    """Optuna's RDBStorage for ``url`` with its heartbeat on (None: in memory)."""
    if url is None:
        return None
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # Several processes on one SQLite file: wait for the write lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _retrying(
            f"opening {redact(url)}",
            lambda: optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=on_stale,
                **kwargs,
            ),
        )


def open_study(
    storage: optuna.storages.BaseStorage | str | None,
    name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it (exactly one worker does)."""

    def create_or_load() -> tuple[optuna.Study, bool]:
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, directions=list(directions), sampler=sampler
            )
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(storage=storage, study_name=name, sampler=sampler), False

    study, created = _retrying(f"opening study {name!r}", create_or_load)
    stored = [d.name.lower() for d in study.directions]
    if stored != list(directions):
        where = redact(storage) if isinstance(storage, str) else "its storage"
        raise ValueError(
            f"study {name!r} in {where} optimises {stored}, not {list(directions)}: pick "
            "another hydra.sweeper.study_name"
        )
    return study, created


def wait_for_user_attr(study: optuna.Study, key: str, timeout_s: float) -> Any:
    """Poll the study's user attribute ``key`` (set by the worker that created the study)."""
    end = time.monotonic() + timeout_s
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() > end:
            return value
        time.sleep(0.5)


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


def fail_interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials left by a dead dlas process on this host become FAIL at once (the
    heartbeat would take its grace period). Other hosts' trials are the heartbeat's."""
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
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker failed it first
                continue
            failed.append(study._storage.get_trial(t._trial_id))
    if failed:
        log.warning("marked interrupted trials %s as FAIL", [t.number for t in failed])
    return failed


# --- what the stored trials mean --------------------------------------------------------------
def died(t: FrozenTrial) -> bool:
    """FAIL without a reported status: its worker died (or was interrupted) mid-trial."""
    return t.state == TrialState.FAIL and "dlas.status" not in t.user_attrs


def counts(t: FrozenTrial) -> bool:
    """Whether ``t`` uses up one of ``n_trials``: a configuration evaluated, being evaluated,
    or enqueued to be. Repeats, surplus asks and trials whose worker died do not count (the
    died ones are retried)."""
    attrs = t.user_attrs
    if DUPLICATE in attrs or SURPLUS in attrs:
        return False
    return not died(t)


def exempt(t: FrozenTrial) -> bool:
    """Enqueued trials that may run past ``n_trials`` (see :data:`EXEMPT_ROLES`)."""
    return RETRY_OF in t.user_attrs or t.user_attrs.get(ROLE) in EXEMPT_ROLES


def over_budget(trials: Iterable[FrozenTrial], number: int, n_trials: int) -> bool:
    """Trial ``number`` would be beyond ``n_trials``: as many counting trials have lower
    numbers. Trial numbers are handed out by the storage, so of two workers racing for the last
    slot exactly the lower-numbered one gets it (one that is still choosing counts too)."""
    return sum(1 for t in trials if t.number < number and counts(t)) >= n_trials


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up ``n_trials`` (WAITING ones included: they are reserved)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def claimed_by(trials: Iterable[FrozenTrial], number: int, sig: str) -> FrozenTrial | None:
    """The trial that holds configuration ``sig`` before trial ``number`` does: a finished one
    that evaluated it, or a live one with a lower number. Every claimant writes its signature
    before it reads, so of two racing claimants at least the later reader sees the other."""
    best = None
    for t in trials:
        if t.number == number or t.user_attrs.get("dlas.signature") != sig or not counts(t):
            continue
        if t.state == TrialState.WAITING:
            continue
        if (t.state in FINISHED or t.number < number) and (best is None or t.number < best.number):
            best = t
    return best


def finished_by_signature(trials: Iterable[FrozenTrial]) -> dict[str, FrozenTrial]:
    """signature → the trial that ran (or was found invalid for) that configuration."""
    out: dict[str, FrozenTrial] = {}
    for t in trials:
        sig = t.user_attrs.get("dlas.signature")
        if t.state in FINISHED and sig and counts(t) and sig not in out:
            out[sig] = t
    return out


def running_signatures(trials: Iterable[FrozenTrial]) -> set[str]:
    return {
        str(t.user_attrs["dlas.signature"])
        for t in trials
        if t.state == TrialState.RUNNING and counts(t) and "dlas.signature" in t.user_attrs
    }


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def retries_of(trials: Iterable[FrozenTrial], sig: str) -> int:
    """How many trials of configuration ``sig`` their workers died in."""
    return sum(1 for t in trials if died(t) and t.user_attrs.get("dlas.signature") == sig)


def fail_stale(study: optuna.Study) -> None:
    """``optuna.storages.fail_stale_trials``: trials without a heartbeat for the grace period
    become FAIL, and the storage's stale-trial callback runs for each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class Heartbeat:
    """Records Optuna heartbeats for every trial this worker holds (launched ones and those
    waiting for their dense baseline), from one thread. Optuna's own heartbeat thread covers
    ``study.optimize`` only; this is the same mechanism for ask/tell."""

    def __init__(self, storage: Any) -> None:
        interval = storage.get_heartbeat_interval() if storage is not None else None
        self.storage = storage if interval else None
        self.interval = interval or 0
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if self.storage is None:
            return
        self.storage.record_heartbeat(trial_id)  # now: a trial without one is never stale
        with self._lock:
            self.trial_ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="dlas-heartbeat", daemon=True)
            self._thread.start()

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a lost beat is retried next time
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
