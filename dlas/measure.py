"""The study's measurement protocol: latency at batch 1 and accuracy of the compiled module."""

from __future__ import annotations

import numpy as np
import torch

from dlas.data import DataBundle
from dlas.devices import Runner


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    s = np.asarray(samples_ms, dtype=np.float64)
    return {
        "latency/median_ms": float(np.median(s)),
        "latency/p90_ms": float(np.percentile(s, 90)),
        "latency/mean_ms": float(s.mean()),
        "latency/std_ms": float(s.std()),
        "latency/min_ms": float(s.min()),
    }


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
