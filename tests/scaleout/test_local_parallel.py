"""Parallel jobs on one host: the device timing lock, and the cache's per-entry lock."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import time

import pytest

from dlas.devices.exclusive import LOCK_DIR_ENV, TimingLock


def _hold(lock_file: str, seconds: float, ready) -> None:
    with open(lock_file, "a+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        ready.set()
        time.sleep(seconds)


def test_timing_waits_for_the_device_and_records_the_wait(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    lock = TimingLock("host-cpu")
    ctx = mp.get_context("fork")  # nothing heavy runs in the child
    ready = ctx.Event()
    other = ctx.Process(target=_hold, args=(str(tmp_path / "host-cpu.lock"), 1.5, ready))
    other.start()
    try:
        assert ready.wait(30)
        with lock.held():
            pass
    finally:
        other.join(30)
    metrics = lock.take()
    assert metrics["latency/lock_wait_s"] > 1.0
    assert lock.take() == {}  # one run's figures, then reset


def _train(args) -> bool:
    import torch

    torch.set_num_threads(1)
    from hydra import compose, initialize_config_module

    from dlas.cache import Cache
    from dlas.config import register_schemas, validate
    from dlas.data import load_dataset
    from dlas.models import load_or_train

    register_schemas()
    cache_dir, barrier = args
    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = validate(
            compose(
                "config",
                ["model=tiny_cnn", "dataset.train.epochs=1", f"paths.cache_dir={cache_dir}"],
            )
        )
    data = load_dataset(cfg.dataset)
    barrier.wait(120)  # both look the checkpoint up at the same moment
    _, origin = load_or_train(cfg.model, cfg.dataset, data, Cache(cfg.paths.cache_dir))
    return bool(origin["cache_hit"])


@pytest.mark.scaleout
def test_two_jobs_racing_for_one_checkpoint_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    with ctx.Pool(2) as pool:
        hits = pool.map(_train, [(str(tmp_path), barrier)] * 2)
    assert sorted(hits) == [False, True]
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
