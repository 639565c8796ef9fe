"""The study's measurement protocol: latency at batch 1 and accuracy of the compiled module."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from dlas import metrics as m
from dlas.data import DataBundle
from dlas.devices import Runner

# Bootstrap resamples of the median's confidence interval (fixed seed: reruns agree).
BOOTSTRAP_RESAMPLES = 2000
# TVM's, ONNX Runtime's and PyTorch's idle worker threads spin for a while after a call; with
# 2 cores they take them from whichever system runs next. A pause did not hide that: after
# PyTorch eager or TVM and a 50 ms pause, ONNX Runtime's MobileNetV2-224 took 11-23 ms where it
# takes 5 (Zen 3, 2 cores, 4 of 4 processes). Warming the next system up on its own calls for
# 0.05-0.1 s measured it at 4.7-6.0 ms every time, and left the others' figures unchanged.
WARMUP_S = 0.1
# Blocks a run's timed calls are split into when two systems are timed side by side (PyTorch
# eager beside the program; a tuned build beside the untuned one).
SIDE_BY_SIDE_ROUNDS = 5
K = TypeVar("K")


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    s = np.asarray(samples_ms, dtype=np.float64)
    low, high = median_interval(s)
    return {
        m.LATENCY: float(np.median(s)),
        "latency/p90_ms": float(np.percentile(s, 90)),
        "latency/p99_ms": float(np.percentile(s, 99)),
        "latency/mean_ms": float(s.mean()),
        "latency/std_ms": float(s.std()),
        "latency/min_ms": float(s.min()),
        m.LATENCY_CI_LOW: low,
        m.LATENCY_CI_HIGH: high,
    }


def median_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median (one sample: that sample, twice)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(samples), size=(BOOTSTRAP_RESAMPLES, len(samples)))
    medians = np.median(samples[picks], axis=1)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def load_per_core() -> float:
    """1-minute load average per core (0 where the OS does not report one)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def noise(
    stats: dict[str, float], loads: tuple[float, float], ci_fraction: float, max_load: float
) -> str:
    """Why a latency measurement is not to be trusted ('' when it is)."""
    reasons = []
    width = stats[m.LATENCY_CI_HIGH] - stats[m.LATENCY_CI_LOW]
    if width > ci_fraction * stats[m.LATENCY]:
        reasons.append(
            f"95% interval of the median {width:.3g} ms wide, over {ci_fraction:g} of the median"
        )
    if max(loads) > max_load:
        reasons.append(
            f"load average per core {max(loads):.2f} (before {loads[0]:.2f}, after "
            f"{loads[1]:.2f}) over {max_load:g}: other work shared the cores"
        )
    return "; ".join(reasons)


def first_input(data: DataBundle) -> np.ndarray:
    """The batch-1 input every latency sample is timed on."""
    return next(iter(data.test_loader(batch_size=1)))[0].numpy()


def measure_latency(runner: Runner, data: DataBundle, warmup: int, repeat: int) -> list[float]:
    return runner.time(first_input(data), warmup=warmup, repeat=repeat)


def side_by_side(
    runners: Mapping[K, Runner], x: np.ndarray | None, warmup: int, repeat: int
) -> tuple[dict[K, list[float]], int]:
    """:func:`round_robin` with the run's protocol: at least ``repeat`` timed calls of each
    runner, in SIDE_BY_SIDE_ROUNDS rounds (fewer if fewer calls). Returns the times and the
    calls per block (what :func:`speedup` resamples by)."""
    rounds = min(SIDE_BY_SIDE_ROUNDS, repeat)
    calls = -(-repeat // rounds)  # whole rounds
    return round_robin(runners, x, rounds, calls, warmup=warmup), calls


def round_robin(
    runners: Mapping[K, Runner],
    x: np.ndarray | None,
    rounds: int,
    calls: int,
    *,
    warmup: int = 1,
    warmup_s: float = WARMUP_S,
) -> dict[K, list[float]]:
    """Times (ms) of ``rounds`` x ``calls`` calls of each runner, round-robin so that all see
    the same machine; before each block, untimed calls of that runner for about ``warmup_s``
    (at least ``warmup``), sized by its previous block (its first block by one probe call)."""
    times: dict[K, list[float]] = {k: [] for k in runners}
    estimate_ms: dict[K, float] = {}
    for _ in range(rounds):
        for key, runner in runners.items():
            if key not in estimate_ms:
                estimate_ms[key] = runner.time(x, warmup=warmup, repeat=1)[0]
            untimed = math.ceil(warmup_s * 1e3 / max(estimate_ms[key], 1e-4))
            block = runner.time(x, warmup=min(max(warmup, untimed), 100_000), repeat=calls)
            estimate_ms[key] = float(np.median(block))
            times[key] += block
    return times


class Speedup(NamedTuple):
    """How many times faster one system ran than another: the ratio of their medians, and a
    95% interval of it."""

    ratio: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"x{self.ratio:.2f} (95%: {self.low:.2f}-{self.high:.2f})"


def speedup(fast: Sequence[float], slow: Sequence[float], calls: int) -> Speedup:
    """``median(slow) / median(fast)`` of two systems' :func:`round_robin` times, with a
    percentile-bootstrap interval that resamples whole rounds: a round's blocks of the two
    systems ran back to back, so a change of machine speed between rounds (other tenants on a
    shared host; one core slower than the other for a while) moves both of a pair and stays
    out of their ratio, where resampling calls one by one would count it as noise."""
    a = np.asarray(fast, dtype=np.float64).reshape(-1, calls)
    b = np.asarray(slow, dtype=np.float64).reshape(-1, calls)
    rng = np.random.default_rng(0)
    rounds = rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
    ratios = np.median(b[rounds].reshape(BOOTSTRAP_RESAMPLES, -1), axis=1) / np.median(
        a[rounds].reshape(BOOTSTRAP_RESAMPLES, -1), axis=1
    )
    low, high = np.percentile(ratios, [2.5, 97.5])
    return Speedup(float(np.median(b) / np.median(a)), float(low), float(high))


def compiled_accuracy(runner: Runner, data: DataBundle, limit: int | None) -> dict[str, float]:
    """Top-1/top-5 of the compiled module, one sample at a time (it is built for batch 1)."""
    correct1 = correct5 = total = 0
    for x, y in data.test_loader(batch_size=1, limit=limit):
        logits = runner.run(x.numpy())[0]
        top5 = np.argsort(-logits)[:5]
        correct1 += int(top5[0] == int(y))
        correct5 += int(int(y) in top5)
        total += 1
    return {"accuracy/top1": correct1 / total, "accuracy/top5": correct5 / total}


def logit_agreement(
    runner: Runner, model: torch.nn.Module, data: DataBundle, samples: int
) -> dict[str, float]:
    """Largest |logit| difference between the compiled module and PyTorch, and how much the
    PyTorch logits themselves vary (a tiny spread would make any agreement meaningless)."""
    diffs, logits = [], []
    with torch.no_grad():
        for x, _ in data.test_loader(batch_size=1, limit=samples):
            ref = model(x).numpy()
            diffs.append(float(np.abs(runner.run(x.numpy()) - ref).max()))
            logits.append(ref[0])
    return {
        "compare/max_abs_logit_diff": max(diffs),
        "compare/logit_spread": float(np.std(np.stack(logits), axis=0).mean()),
    }
