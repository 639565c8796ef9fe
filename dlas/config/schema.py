"""Structured-config schemas for the six DLAS layers.

Each group's YAML files name one of these dataclasses in their defaults list, so Hydra checks
keys and types when it composes the config. Range checks live in ``__post_init__`` and run in
:func:`dlas.config.validate`, before any expensive stage starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Every option schema, importable from here (the layer packages and tests do).
from dlas.config.checks import ConfigError, require
from dlas.config.ml import (
    CompressionConfig,
    CustomModelConfig,
    DatasetConfig,
    Fp16Config,
    Int8Config,
    ModelConfig,
    OnnxModelConfig,
    PruningConfig,
    SyntheticDatasetConfig,
    TrainConfig,
    WeightPruningConfig,
)
from dlas.config.systems import (
    AlgorithmConfig,
    AutoAlgorithmConfig,
    BlockedAlgorithmConfig,
    DeviceConfig,
    MetaScheduleTuningConfig,
    OnnxRuntimeTuningConfig,
    PerLayerAlgorithmConfig,
    TorchCompileTuningConfig,
    TuningConfig,
)

__all__ = [
    "AlgorithmConfig",
    "AutoAlgorithmConfig",
    "BlockedAlgorithmConfig",
    "CompressionConfig",
    "Config",
    "CustomModelConfig",
    "ConfigError",
    "DatasetConfig",
    "DeviceConfig",
    "Fp16Config",
    "GROUP_SCHEMAS",
    "Int8Config",
    "MetaScheduleTuningConfig",
    "ModelConfig",
    "OnnxModelConfig",
    "OnnxRuntimeTuningConfig",
    "PerLayerAlgorithmConfig",
    "PruningConfig",
    "SyntheticDatasetConfig",
    "TorchCompileTuningConfig",
    "TrainConfig",
    "TuningConfig",
    "WeightPruningConfig",
    "register_schemas",
]


# --- run-wide ------------------------------------------------------------------------------
@dataclass
class PathsConfig:
    # Relative paths resolve against the directory the run was started from.
    cache_dir: str = ".cache/dlas"
    mlruns_dir: str = "mlruns"


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else SQLite inside paths.mlruns_dir.
    uri: str | None = None
    experiment: str = "dlas"
    run_name: str | None = None
    log_library: bool = True
    log_ir: bool = True
    # The run's program as an MLflow model (`model/`): dlas's pyfunc flavour for TVM libraries
    # that load on this host, mlflow.pytorch / mlflow.onnx for the baselines (dlas.serving).
    log_model: bool = True
    # At the end of a sweep or study, register its best feasible run in the Model Registry.
    register_best: bool = True


@dataclass
class EvalConfig:
    # How many test samples feed the PyTorch-vs-TVM logit comparison.
    compare_samples: int = 8
    # Also time PyTorch eager on the same model and input (local devices only).
    eager_baseline: bool = True
    # A run is tagged noisy when the 95% bootstrap interval of its median latency is wider than
    # this fraction of the median, or when the 1-minute load average per core exceeded
    # noisy_load before or after timing (other work was competing for the cores).
    noisy_ci_fraction: float = 0.1
    noisy_load: float = 1.0
    # Per-kernel profile of a local TVM build (profile/layers table; a few extra calls).
    profile: bool = True
    # perf/fraction_of_peak against this host's roofline (measured once, then cached).
    roofline: bool = True

    def __post_init__(self) -> None:
        require(
            self.compare_samples >= 1, "eval.compare_samples", "must be >= 1", self.compare_samples
        )
        require(
            self.noisy_ci_fraction > 0,
            "eval.noisy_ci_fraction",
            "must be > 0",
            self.noisy_ci_fraction,
        )
        require(self.noisy_load > 0, "eval.noisy_load", "must be > 0", self.noisy_load)


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    compression: CompressionConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    tuning: TuningConfig = MISSING
    device: DeviceConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Option schemas, kept in their own groups (schema/<layer>) so that Hydra's list of a layer's
# options shows only real choices. A YAML file selects one with
# `defaults: [/schema/<layer>@_here_: <name>, _self_]`.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"base": DatasetConfig, "synthetic": SyntheticDatasetConfig},
    "model": {"base": ModelConfig, "custom": CustomModelConfig, "onnx": OnnxModelConfig},
    "compression": {
        "base": CompressionConfig,
        "pruning": PruningConfig,
        "weight_pruning": WeightPruningConfig,
        "fp16": Fp16Config,
        "int8": Int8Config,
    },
    "algorithm": {
        "base": AlgorithmConfig,
        "per_layer": PerLayerAlgorithmConfig,
        "auto": AutoAlgorithmConfig,
        "blocked": BlockedAlgorithmConfig,
    },
    "tuning": {
        "base": TuningConfig,
        "metaschedule": MetaScheduleTuningConfig,
        "torch_compile": TorchCompileTuningConfig,
        "onnxruntime": OnnxRuntimeTuningConfig,
    },
    "device": {"base": DeviceConfig},
}


def register_schemas() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
