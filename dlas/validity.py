"""Which layer combinations can run. One place, used by single runs, sweeps and the search.

Each rule looks at the typed config only, so it answers before any expensive stage runs.
"""

from __future__ import annotations

from collections.abc import Callable

from dlas.config.schema import Config


class InvalidCombination(ValueError):
    """These layer choices cannot be combined; the message says why and what would work."""


Rule = Callable[[Config], "str | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


@rule
def sparse_algorithm_needs_zeros(cfg: Config) -> str | None:
    from dlas.algorithms import ALGORITHMS
    from dlas.compression import COMPRESSIONS

    if cfg.algorithm.name not in ALGORITHMS or cfg.compression.name not in COMPRESSIONS:
        return None  # unknown names are reported by their own layer
    algorithm = ALGORITHMS.get(cfg.algorithm.name)
    compression = COMPRESSIONS.get(cfg.compression.name)
    if getattr(algorithm, "sparse", False) and not compression.sparse_weights:
        return (
            f"algorithm={cfg.algorithm.name} reads the weights in CSR form and needs a "
            f"weight-pruned model (compression=weight_pruning); compression="
            f"{cfg.compression.name} leaves no zeros to skip"
        )
    return None


def problems(cfg: Config) -> list[str]:
    return [reason for check in RULES if (reason := check(cfg))]


def check(cfg: Config) -> None:
    reasons = problems(cfg)
    if reasons:
        raise InvalidCombination("; ".join(reasons))
