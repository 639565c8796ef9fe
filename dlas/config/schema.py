"""Structured-config schemas for the six DLAS layers.

Each group's YAML files name one of these dataclasses in their defaults list, so Hydra checks
keys and types when it composes the config. Range checks live in ``__post_init__`` and run in
:func:`dlas.config.validate`, before any expensive stage starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value is outside what its option allows."""


def _require(ok: bool, option: str, allowed: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{option}={got!r} is invalid: {allowed}.")


def _one_of(option: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, option, f"expected one of {', '.join(choices)}", value)


# --- dataset -------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """How a model is trained on this dataset (it is part of the trained checkpoint's key)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, "dataset.train.epochs", "must be >= 0", self.epochs)
        _require(self.batch_size >= 1, "dataset.train.batch_size", "must be >= 1", self.batch_size)
        _require(self.lr > 0, "dataset.train.lr", "must be > 0", self.lr)
        _one_of("dataset.train.schedule", self.schedule, ("cosine", "step", "constant"))


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "data"
    image_size: int = 32
    num_classes: int = 10
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    download: bool = False
    # Evaluate the compiled model on the first N test samples only (None: all of them).
    test_limit: int | None = None
    calibration_samples: int = 256
    num_workers: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _require(self.image_size >= 8, "dataset.image_size", "must be >= 8", self.image_size)
        _require(self.num_classes >= 2, "dataset.num_classes", "must be >= 2", self.num_classes)
        _require(
            self.test_limit is None or self.test_limit >= 1,
            "dataset.test_limit",
            "must be null or >= 1",
            self.test_limit,
        )


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    num_samples: int = 64


# --- model ---------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    # A registered dlas model or any torchvision classifier name.
    name: str = MISSING
    # auto: CIFAR variant (3x3 stem, no early downsampling) for inputs <= 64 px, else ImageNet.
    variant: str = "auto"
    # torchvision weights enum name (e.g. DEFAULT) or a checkpoint path; null trains from scratch.
    weights: str | None = None

    def __post_init__(self) -> None:
        _one_of("model.variant", self.variant, ("auto", "cifar", "imagenet"))


@dataclass
class CustomModelConfig(ModelConfig):
    # The user's network: path/to/file.py:build or package.module:build, a callable that returns
    # an nn.Module given the number of classes (dlas.models.custom).
    source: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None:
            return  # validity rule own_model_is_given names the fix
        target, sep, attr = self.source.rpartition(":")
        _require(
            bool(sep and target and attr.isidentifier()),
            "model.source",
            "expected path/to/file.py:callable or package.module:callable",
            self.source,
        )
        if target.endswith(".py") or "/" in target:
            path = Path(target).expanduser()
            _require(
                path.is_file() and os.access(path, os.R_OK),
                "model.source",
                f"{path.resolve()} is not a readable Python file",
                self.source,
            )


@dataclass
class OnnxModelConfig(ModelConfig):
    # An ONNX classifier, imported by TVM's ONNX frontend (dlas.models.onnx_model).
    path: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.weights is None,
            "model.weights",
            "model=onnx takes its weights from the ONNX file (model.path); leave weights null",
            self.weights,
        )
        if self.path is not None:
            path = Path(self.path).expanduser()
            _require(
                path.is_file() and os.access(path, os.R_OK),
                "model.path",
                f"{path.resolve()} is not a readable ONNX file",
                self.path,
            )


# --- compression ---------------------------------------------------------------------------
@dataclass
class CompressionConfig:
    name: str = MISSING


@dataclass
class PruningConfig(CompressionConfig):
    # Fraction removed: of the conv/linear weights (weight_pruning) or of each layer's output
    # channels (channel_pruning).
    amount: float = 0.5
    # Fine-tuning after pruning, with the dataset's training recipe; 0 skips it.
    finetune_epochs: int = 2
    # null: dataset.train.lr (decayed by dataset.train.schedule over the fine-tuning epochs).
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        _require(0 < self.amount < 1, "compression.amount", "must be in (0, 1)", self.amount)
        _require(
            self.finetune_epochs >= 0,
            "compression.finetune_epochs",
            "must be >= 0",
            self.finetune_epochs,
        )
        _require(
            self.finetune_lr is None or self.finetune_lr > 0,
            "compression.finetune_lr",
            "must be null or > 0",
            self.finetune_lr,
        )


@dataclass
class WeightPruningConfig(PruningConfig):
    # layerwise: `amount` in every layer; global: one magnitude threshold over all layers.
    # Global empties whole layers of MobileNetV2 (its 1x1 projections have small weights):
    # 50% global left them 99% sparse and the model at 51% top-1 on digits.
    scope: str = "layerwise"

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("compression.scope", self.scope, ("global", "layerwise"))


@dataclass
class Fp16Config(CompressionConfig):
    # Accumulator of conv2d/matmul: float16 (all-fp16 arithmetic) or float32.
    accumulate: str = "float16"

    def __post_init__(self) -> None:
        _one_of("compression.accumulate", self.accumulate, ("float16", "float32"))


@dataclass
class Int8Config(CompressionConfig):
    # Activation ranges come from this many batches of training images.
    calibration_batches: int = 8
    calibration_batch_size: int = 32

    def __post_init__(self) -> None:
        _require(
            self.calibration_batches >= 1,
            "compression.calibration_batches",
            "must be >= 1",
            self.calibration_batches,
        )
        _require(
            self.calibration_batch_size >= 1,
            "compression.calibration_batch_size",
            "must be >= 1",
            self.calibration_batch_size,
        )


# --- algorithm -----------------------------------------------------------------------------
@dataclass
class AlgorithmConfig:
    name: str = MISSING


@dataclass
class PerLayerAlgorithmConfig(AlgorithmConfig):
    # Unmatched layers run this one.
    default: str = "direct"
    # Selector (layer index, depthwise, grouped, k3s1, k1...) -> algorithm name.
    layers: dict[Any, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # `+algorithm.layers={0: gemm}` gives an int key, `+algorithm.layers.0=gemm` a str one.
        self.layers = {str(k): v for k, v in self.layers.items()}


# --- tuning (systems software) -------------------------------------------------------------
@dataclass
class TuningConfig:
    name: str = MISSING


@dataclass
class MetaScheduleTuningConfig(TuningConfig):
    # Measured trials for the whole model (MetaSchedule's max_trials_global); 0 applies the
    # records the database already has and tunes nothing.
    trials: int = 512
    # Cap per task; null: only the global budget limits a task.
    trials_per_task: int | None = None
    # Candidates measured per search round (num_trials_per_iter), at most trials / tasks so
    # that the first round reaches every task.
    trials_per_iter: int = 64
    # evolutionary | replay-trace | replay-func, with that strategy's constructor arguments
    # (e.g. {population_size: 512, genetic_num_iters: 4}).
    strategy: str = "evolutionary"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # gradient (more trials where the latency is) | round-robin.
    task_scheduler: str = "gradient"
    # xgb | mlp | random, with that cost model's constructor arguments.
    cost_model: str = "xgb"
    cost_model_options: dict[str, Any] = field(default_factory=dict)
    # Candidates compile in this process on builder_workers threads (null: one per core).
    builder: str = "inprocess"
    builder_workers: int | None = None
    # inprocess: timed in this process; local: one worker process that dies with this one.
    # Devices with their own MetaSchedule runner (RPC boards) use it instead.
    runner: str = "inprocess"
    runner_timeout_s: float = 60.0
    runner_number: int = 3
    runner_repeat: int = 1
    runner_min_repeat_ms: int = 50
    cpu_cache_flush: bool = False
    seed: int | None = 0
    # Also time dlas's default schedule of each tuned task and keep it as a record, so that
    # the build uses whichever is faster per task (never slower than untuned).
    include_defaults: bool = True
    # A records folder, MLflow run id or runs:/<id>/tuning URI to apply instead of tuning.
    records: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _require(self.trials >= 0, "tuning.trials", "must be >= 0", self.trials)
        _require(
            self.trials_per_task is None or self.trials_per_task >= 1,
            "tuning.trials_per_task",
            "must be null or >= 1",
            self.trials_per_task,
        )
        _require(
            self.trials_per_iter >= 1,
            "tuning.trials_per_iter",
            "must be >= 1",
            self.trials_per_iter,
        )
        _one_of("tuning.strategy", self.strategy, ("evolutionary", "replay-trace", "replay-func"))
        _one_of("tuning.task_scheduler", self.task_scheduler, ("gradient", "round-robin"))
        _one_of("tuning.cost_model", self.cost_model, ("xgb", "mlp", "random"))
        _one_of("tuning.builder", self.builder, ("inprocess",))
        _one_of("tuning.runner", self.runner, ("inprocess", "local"))
        _require(
            self.builder_workers is None or self.builder_workers >= 1,
            "tuning.builder_workers",
            "must be null or >= 1",
            self.builder_workers,
        )
        _require(
            self.runner_timeout_s > 0,
            "tuning.runner_timeout_s",
            "must be > 0",
            self.runner_timeout_s,
        )
        _require(
            self.runner_number >= 1, "tuning.runner_number", "must be >= 1", self.runner_number
        )
        _require(
            self.runner_repeat >= 1, "tuning.runner_repeat", "must be >= 1", self.runner_repeat
        )
        _require(
            self.runner_min_repeat_ms >= 0,
            "tuning.runner_min_repeat_ms",
            "must be >= 0",
            self.runner_min_repeat_ms,
        )


@dataclass
class TorchCompileTuningConfig(TuningConfig):
    # torch.compile mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs.
    mode: str = "default"
    # Inductor freezing: weights become constants (its recommended CPU inference setting).
    freezing: bool = True

    def __post_init__(self) -> None:
        _one_of(
            "tuning.mode",
            self.mode,
            ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        )


@dataclass
class OnnxRuntimeTuningConfig(TuningConfig):
    opset: int = 18
    # ONNX Runtime graph optimization level: disable | basic | extended | all.
    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        _require(self.opset >= 11, "tuning.opset", "must be >= 11", self.opset)
        _one_of(
            "tuning.graph_optimization",
            self.graph_optimization,
            ("disable", "basic", "extended", "all"),
        )


# --- device (hardware) ---------------------------------------------------------------------
@dataclass
class DeviceConfig:
    name: str = MISSING
    # local | cuda | rpc: where the compiled module runs.
    kind: str = "local"
    # TVM target in JSON-dict form; "auto" values are read from the machine that runs the code
    # (this host for local/cuda, the board over RPC for rpc). Empty: this host's CPU. (A default
    # with keys would be merged into every YAML's target, e.g. an mcpu into a CUDA target.)
    target: dict[str, Any] = field(default_factory=dict)
    # Target of the host-side code (a GPU target's kernel launches); null: derived from target.
    host_target: dict[str, Any] | None = None
    num_threads: int | None = None
    warmup_runs: int = 1
    timed_runs: int = 150
    measure: bool = True
    # kind=rpc: through an RPC tracker ("HOST:PORT") asking for a server registered under key,
    # or, when host is set, straight to the RPC server at host:port (the tracker is then unused).
    tracker: str | None = None
    key: str | None = None
    host: str | None = None
    port: int = 9090
    # C++ compiler that links the library for the device's triple (null: this host's own).
    cross_compiler: str | None = None
    # Longest one remote session (upload, latency, accuracy) may last; connects wait <= 10 s.
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _one_of("device.kind", self.kind, ("local", "cuda", "rpc"))
        _require(self.timeout_s > 0, "device.timeout_s", "must be > 0", self.timeout_s)
        _require(0 < self.port < 65536, "device.port", "must be in 1..65535", self.port)
        if self.tracker is not None:
            host, _, port = str(self.tracker).rpartition(":")
            _require(
                bool(host) and port.isdigit() and 0 < int(port) < 65536,
                "device.tracker",
                "expected HOST:PORT, e.g. 127.0.0.1:9190",
                self.tracker,
            )
        if self.kind == "rpc":
            _require(
                bool(self.host or self.tracker),
                "device.tracker",
                "kind=rpc needs device.tracker=HOST:PORT or device.host=HOST",
                self.tracker,
            )
            _require(
                bool(self.host or self.key),
                "device.key",
                "a tracker hands out servers by key: set device.key",
                self.key,
            )
        _require(self.warmup_runs >= 0, "device.warmup_runs", "must be >= 0", self.warmup_runs)
        _require(self.timed_runs >= 1, "device.timed_runs", "must be >= 1", self.timed_runs)
        _require(
            self.num_threads is None or self.num_threads >= 1,
            "device.num_threads",
            "must be null or >= 1",
            self.num_threads,
        )


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

    def __post_init__(self) -> None:
        _require(
            self.compare_samples >= 1, "eval.compare_samples", "must be >= 1", self.compare_samples
        )


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
    "algorithm": {"base": AlgorithmConfig, "per_layer": PerLayerAlgorithmConfig},
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
