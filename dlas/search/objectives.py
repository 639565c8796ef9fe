"""What a finished run means to the study: objective values and the accuracy-drop constraint."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dlas.search.summary import ACCURACY, BASELINE_COMPRESSION, DROP, LATENCY

DROP_CONSTRAINT = "accuracy_drop"


class Objective:
    """Base class. ``values`` raises ``KeyError`` when the run did not log what it needs."""

    name = "base"
    directions: tuple[str, ...] = ()
    # Whether trials are judged against an accuracy-drop limit (needs dense baselines).
    constrained = False

    def __init__(
        self,
        latency: str = LATENCY,
        accuracy: str = ACCURACY,
        max_accuracy_drop: float | None = None,
    ) -> None:
        self.latency = latency
        self.accuracy = accuracy
        self.max_accuracy_drop = max_accuracy_drop

    def values(self, metrics: dict[str, float]) -> list[float]:
        raise NotImplementedError

    def target_names(self) -> list[str]:
        raise NotImplementedError


class ConstrainedLatency(Objective):
    """Minimise latency subject to accuracy drop vs the dense model <= ``max_accuracy_drop``
    (points of top-1)."""

    name = "latency"
    directions = ("minimize",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constrained = self.max_accuracy_drop is not None

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [metrics[self.latency]]

    def target_names(self) -> list[str]:
        return [self.latency]


class LatencyAccuracyPareto(Objective):
    """The latency / accuracy Pareto front (two objectives, no constraint)."""

    name = "pareto"
    directions = ("minimize", "maximize")

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [metrics[self.latency], metrics[self.accuracy]]

    def target_names(self) -> list[str]:
        return [self.latency, self.accuracy]


OBJECTIVES: dict[str, type[Objective]] = {
    ConstrainedLatency.name: ConstrainedLatency,
    LatencyAccuracyPareto.name: LatencyAccuracyPareto,
}


def create_objective(name: str, **kwargs: Any) -> Objective:
    try:
        return OBJECTIVES[name](**kwargs)
    except KeyError:
        raise ValueError(
            f"hydra.sweeper.objective={name!r}: expected one of {', '.join(OBJECTIVES)}"
        ) from None


class Baselines:
    """Best dense accuracy per trained model (see ``JobRecord.model_key``) seen in the study."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}

    def add(self, model_key: str, compression: str | None, accuracy: float | None) -> None:
        if compression == BASELINE_COMPRESSION and accuracy is not None:
            self.best[model_key] = max(self.best.get(model_key, -math.inf), accuracy)

    def add_trials(self, trials: Iterable[Any]) -> None:
        for t in trials:
            if t.state.name == "COMPLETE":
                attrs = t.user_attrs
                self.add(
                    attrs.get("dlas.model_key", ""),
                    attrs.get("dlas.compression"),
                    attrs.get("dlas.accuracy"),
                )

    def drop(self, model_key: str, metrics: dict[str, float], accuracy: str) -> float | None:
        """Drop in points: the run's own ``accuracy/drop_vs_dense`` if logged, else from the
        best dense run of the same model in the study."""
        if DROP in metrics:
            return metrics[DROP]
        if accuracy in metrics and model_key in self.best:
            return 100 * (self.best[model_key] - metrics[accuracy])
        return None
