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


def algorithms_run(cfg: Config) -> list[str]:
    """The algorithms whose kernels ``cfg.algorithm`` runs (per_layer: all it maps to);
    empty when the option itself is invalid, which its own rule reports."""
    from dlas.algorithms import ALGORITHMS, resolve

    if cfg.algorithm.name not in ALGORITHMS:
        return []
    try:
        return resolve(cfg.algorithm).algorithms()
    except ValueError:
        return []


@rule
def algorithm_options_are_valid(cfg: Config) -> str | None:
    from dlas.algorithms import ALGORITHMS, resolve

    if cfg.algorithm.name not in ALGORITHMS:
        return None  # unknown names are reported by their own layer
    try:
        resolve(cfg.algorithm)
    except ValueError as exc:
        return str(exc)
    return None


@rule
def sparse_algorithm_needs_zeros(cfg: Config) -> str | None:
    from dlas.algorithms import ALGORITHMS
    from dlas.compression import COMPRESSIONS

    if cfg.compression.name not in COMPRESSIONS:
        return None
    if COMPRESSIONS.get(cfg.compression.name).sparse_weights:
        return None
    sparse = [n for n in algorithms_run(cfg) if ALGORITHMS.get(n).sparse]
    if not sparse:
        return None
    via = "" if sparse == [cfg.algorithm.name] else f" (mapped by algorithm={cfg.algorithm.name})"
    return (
        f"algorithm={', '.join(sparse)}{via} reads the weights in CSR form and needs a "
        f"weight-pruned model (compression=weight_pruning); compression="
        f"{cfg.compression.name} leaves no zeros to skip"
    )


@rule
def baselines_run_in_this_process(cfg: Config) -> str | None:
    from dlas.tuning import TUNERS

    if cfg.device.kind == "local" or cfg.tuning.name not in TUNERS:
        return None
    if getattr(TUNERS.get(cfg.tuning.name), "uses_tvm", True):
        return None
    return (
        f"tuning={cfg.tuning.name} runs outside TVM, in this process on this CPU; "
        f"device={cfg.device.name} (kind={cfg.device.kind}) runs TVM libraries only: use a "
        "TVM tuning option, or a local device"
    )


@rule
def relax_compression_needs_tvm(cfg: Config) -> str | None:
    from dlas.compression import COMPRESSIONS
    from dlas.tuning import TUNERS

    if cfg.compression.name not in COMPRESSIONS or cfg.tuning.name not in TUNERS:
        return None
    compression = COMPRESSIONS.get(cfg.compression.name)
    tuner = TUNERS.get(cfg.tuning.name)
    if not compression.acts_on_relax or getattr(tuner, "uses_tvm", True):
        return None
    if cfg.compression.name in getattr(tuner, "peer_compressions", ()):
        return None  # the baseline runs its own library's version of it
    torch_side = [n for n in COMPRESSIONS.names() if not COMPRESSIONS.get(n).acts_on_relax]
    return (
        f"compression={cfg.compression.name} rewrites the TVM (Relax) module and "
        f"tuning={cfg.tuning.name} runs outside TVM: use a TVM tuning option, or one of "
        f"compression={', '.join(torch_side)}"
    )


@rule
def algorithm_supports_compute_dtypes(cfg: Config) -> str | None:
    from dlas.algorithms import ALGORITHMS
    from dlas.compression import COMPRESSIONS

    if cfg.compression.name not in COMPRESSIONS:
        return None
    needed = COMPRESSIONS.get(cfg.compression.name).compute_dtypes

    def supports(name: str) -> bool:
        # Algorithms declare `dtypes` only when they are not dtype-generic.
        dtypes = getattr(ALGORITHMS.get(name), "dtypes", None)
        return dtypes is None or all(d in dtypes for d in needed)

    lacking = [n for n in algorithms_run(cfg) if not supports(n)]
    if not lacking:
        return None
    working = [n for n in ALGORITHMS.names() if supports(n)]
    return (
        f"algorithm={', '.join(lacking)} does not compute in {'/'.join(needed)}, which "
        f"compression={cfg.compression.name} needs; algorithms that do: {', '.join(working)}"
    )


@rule
def compression_has_cpu_features(cfg: Config) -> str | None:
    from dlas.compression import COMPRESSIONS
    from dlas.compression.target_features import missing_cpu_features

    if cfg.compression.name not in COMPRESSIONS:
        return None
    return missing_cpu_features(COMPRESSIONS.get(cfg.compression.name), cfg)


def problems(cfg: Config) -> list[str]:
    return [reason for check in RULES if (reason := check(cfg))]


def check(cfg: Config) -> None:
    reasons = problems(cfg)
    if reasons:
        raise InvalidCombination("; ".join(reasons))
