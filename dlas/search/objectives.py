"""What a finished run means to the study: objective values and the accuracy-drop constraint."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlas.metrics import LATENCY as LATENCY
from dlas.metrics import TOP1 as ACCURACY
from dlas.metrics import DenseBaselines

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


class LatencyAccuracyPareto(Objective):
    """The latency / accuracy Pareto front (two objectives, no constraint)."""

    name = "pareto"
    directions = ("minimize", "maximize")

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [metrics[self.latency], metrics[self.accuracy]]


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


class Baselines(DenseBaselines):
    """The study's dense baselines, fed from its finished trials."""

    def add_trials(self, trials: Iterable[Any]) -> None:
        for t in trials:
            if t.state.name == "COMPLETE":
                attrs = t.user_attrs
                self.add(
                    attrs.get("dlas.model_key", ""),
                    attrs.get("dlas.compression"),
                    attrs.get("dlas.accuracy"),
                )
