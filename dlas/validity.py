"""Which layer combinations can run. One place, used by single runs, sweeps and the search.

Each rule looks at the typed config only, so it answers before any expensive stage runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from dlas.config.schema import Config
from dlas.layers import LAYERS
from dlas.models.rules import RULES as MODEL_RULES


class InvalidCombination(ValueError):
    """These layer choices cannot be combined; the message says why and what would work."""


Rule = Callable[[Config], "str | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def algorithms_run(cfg: Config, required: bool = False) -> list[str]:
    """The algorithms whose kernels ``cfg.algorithm`` runs (per_layer: all it maps to; with
    ``required``, only those that must compute every layer); empty when the option itself is
    invalid, which its own rule reports."""
    from dlas.algorithms import ALGORITHMS, resolve

    if cfg.algorithm.name not in ALGORITHMS:
        return []
    try:
        algorithm = resolve(cfg.algorithm)
    except ValueError:
        return []
    return algorithm.required_algorithms() if required else algorithm.algorithms()


@rule
def options_are_registered(cfg: Config) -> str | None:
    """Every layer's option names registered code: a typo fails here, before any data is
    loaded or model trained (the other rules leave unknown names to this one)."""
    reasons = []
    for layer in LAYERS:
        chosen = layer.implementation(getattr(cfg, layer.group))
        known = layer.registered()
        if chosen in known:
            continue
        close = difflib.get_close_matches(chosen, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        shown = known if len(known) <= 40 else [n for n in known if n in layer.registry]
        more = f"; or {layer.more}" if layer.more and shown != known else ""
        reasons.append(
            f"{layer.group}.{layer.key}={chosen!r} is not a registered {layer.group} "
            f"option{hint}; registered: {', '.join(shown)}{more}"
        )
    return "; ".join(reasons) or None


@rule
def model_variant_exists(cfg: Config) -> str | None:
    from dlas.models.registry import has_cifar_variant

    if cfg.model.variant != "cifar" or has_cifar_variant(cfg.model.name):
        return None
    return (
        f"model={cfg.model.name} has no CIFAR variant in dlas: use model.variant=imagenet or "
        "auto (auto picks the ImageNet form for such models)"
    )


@rule
def metaschedule_components_exist(cfg: Config) -> str | None:
    from dlas.tuning.metaschedule import BUILDERS, RUNNERS

    reasons = []
    for option, known in (("builder", BUILDERS), ("runner", RUNNERS)):
        chosen = getattr(cfg.tuning, option, None)
        if chosen is not None and chosen not in known:
            reasons.append(f"tuning.{option}={chosen!r}: expected one of {', '.join(known)}")
    return "; ".join(reasons) or None


@rule
def auto_times_on_this_host(cfg: Config) -> str | None:
    if cfg.algorithm.name != "auto":
        return None
    if cfg.device.kind == "local" and not cfg.device.target.get("mtriple"):
        return None
    return (
        f"algorithm=auto times its candidates on this machine, and device={cfg.device.name} "
        "runs elsewhere: use a local device, or map layers with algorithm=per_layer"
    )


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
    if TUNERS.get(cfg.tuning.name).uses_tvm:
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
    if not compression.acts_on_relax or tuner.uses_tvm:
        return None
    if cfg.compression.name in tuner.peer_compressions:
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
        dtypes = ALGORITHMS.get(name).dtypes
        return dtypes is None or all(d in dtypes for d in needed)

    lacking = [n for n in algorithms_run(cfg, required=True) if not supports(n)]
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


# The rules of the models users bring (model=custom, model=onnx) live with the model layer.
RULES.extend(MODEL_RULES)
