"""The study's measurement protocol: latency at batch 1 and accuracy of the compiled module."""

from __future__ import annotations

import os

import numpy as np
import torch

from dlas import metrics as m
from dlas.data import DataBundle
from dlas.devices import Runner

# Bootstrap resamples of the median's confidence interval (fixed seed: reruns agree).
BOOTSTRAP_RESAMPLES = 2000


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


def measure_latency(runner: Runner, data: DataBundle, warmup: int, repeat: int) -> list[float]:
    x = next(iter(data.test_loader(batch_size=1)))[0].numpy()
    return runner.time(x, warmup=warmup, repeat=repeat)


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
