"""Names of the metrics a run records, and the one definition of the accuracy drop.

Stages, the sweep summary, the Optuna objectives, the replay oracle and the report all read
runs through these names; a metric renamed here is renamed everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# Latency protocol (batch 1, warm-up, median of N timed runs), milliseconds.
LATENCY = "latency/median_ms"
EAGER_LATENCY = "latency/pytorch_eager_median_ms"
# 95% bootstrap interval of the median; noisy = 1.0 when the measurement is not to be trusted
# (the run's latency.noisy tag says why).
LATENCY_CI_LOW = "latency/median_ci_low_ms"
LATENCY_CI_HIGH = "latency/median_ci_high_ms"
NOISY = "latency/noisy"
# PyTorch eager's median over the program's, both timed in alternating blocks, and a 95%
# bootstrap interval of that ratio (rounds resampled whole: dlas.measure.speedup).
SPEEDUP_VS_EAGER = "latency/speedup_vs_eager"
SPEEDUP_VS_EAGER_CI_LOW = "latency/speedup_vs_eager_ci_low"
SPEEDUP_VS_EAGER_CI_HIGH = "latency/speedup_vs_eager_ci_high"
# Accuracy of the compiled module, and of the PyTorch model it was compiled from (fractions).
TOP1 = "accuracy/top1"
TOP5 = "accuracy/top5"
PYTORCH_TOP1 = "accuracy/pytorch_top1"
PYTORCH_TOP5 = "accuracy/pytorch_top5"
# Accuracy drop against the same checkpoint's dense model, in points of top-1 (1.0 = one
# percentage point); dense_top1 is the reference it was computed from.
DROP = "accuracy/drop_vs_dense"
PYTORCH_DROP = "accuracy/pytorch_drop_vs_dense"
DENSE_TOP1 = "accuracy/dense_top1"
# Model statistics.
MACS = "model/macs"
DENSE_MACS = "model/dense_macs"
# Stage timings, seconds.
TRAIN_SECONDS = "train/seconds"
COMPILE_SECONDS = "compile/seconds"
RUN_SECONDS = "run/seconds"
# Threads the device ran the program (and the PyTorch reference) with.
DEVICE_THREADS = "device/threads"


def accuracy_drop(dense_top1: float, top1: float) -> float:
    """Points of top-1 lost against the dense model (negative: the compressed one is better)."""
    return 100 * (dense_top1 - top1)


# The compression option whose runs are every other option's accuracy reference.
BASELINE_COMPRESSION = "dense"


class DenseBaselines:
    """Best dense top-1 per trained model (a sweep's ``model_key``) among the runs seen, and
    the drop of any run against it."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}

    def add(self, model_key: str, compression: str | None, accuracy: float | None) -> None:
        if compression == BASELINE_COMPRESSION and accuracy is not None:
            self.best[model_key] = max(self.best.get(model_key, -math.inf), accuracy)

    def drop(
        self, model_key: str, metrics: Mapping[str, float], accuracy: str = TOP1
    ) -> float | None:
        """The run's own ``accuracy/drop_vs_dense`` when it logged one (measured against its
        own checkpoint's dense build), else against the best dense run seen of its model."""
        if DROP in metrics:
            return metrics[DROP]
        if accuracy in metrics and model_key in self.best:
            return accuracy_drop(self.best[model_key], metrics[accuracy])
        return None
