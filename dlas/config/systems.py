"""Schemas of the systems half of the stack: algorithm, tuning (systems software) and device
(hardware) options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from dlas.config.checks import one_of, require


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


@dataclass
class AutoAlgorithmConfig(AlgorithmConfig):
    # Each conv runs the fastest of these (that would run it without falling back), timed on
    # this machine; the sparse ones join when the layer's weights have zeros.
    candidates: list[str] = field(
        default_factory=lambda: ["direct", "gemm", "spatial_pack", "winograd"]
    )
    sparse_candidates: list[str] = field(
        default_factory=lambda: ["sparse_direct", "sparse_gemm", "sparse_spatial_pack"]
    )
    # Where measured times are cached (the YAML points it at paths.cache_dir); null: no cache.
    cache_dir: str | None = None
    # Timed runs per candidate (median).
    repeat: int = 20
    # The candidates take turns in this many rounds of their timed runs (1: one after the
    # other), so that a drift in the machine's speed reaches all of them.
    rounds: int = 5
    # Whole-graph layouts (blocked) raced against the per-layer choice as whole models, the
    # faster kept, once per (model, target); []: the per-layer choice only.
    graph_candidates: list[str] = field(default_factory=lambda: ["blocked"])

    def __post_init__(self) -> None:
        require(self.repeat >= 1, "algorithm.repeat", "must be >= 1", self.repeat)
        require(self.rounds >= 1, "algorithm.rounds", "must be >= 1", self.rounds)


@dataclass
class BlockedAlgorithmConfig(AlgorithmConfig):
    # 3x3 stride-1 convs with at least this many output pixels run Winograd F(4x4, 3x3) in
    # the blocked layout (its transformed weights are 4x larger: below ~14x14 outputs their
    # stream from memory costs more than it saves); null: never Winograd.
    winograd_min_pixels: int | None = 196
    # Below that, from this many output pixels, Winograd F(2x2, 3x3): weights 16/9 of the
    # filters for 2.25x fewer multiplications; null: never.
    winograd_2x2_min_pixels: int | None = 49

    def __post_init__(self) -> None:
        for key in ("winograd_min_pixels", "winograd_2x2_min_pixels"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"algorithm.{key}", "must be null or >= 1", value)


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
    trials_per_iter: int = 16
    # evolutionary | replay-trace | replay-func, with that strategy's constructor arguments
    # (e.g. {population_size: 512, genetic_num_iters: 4}).
    strategy: str = "evolutionary"
    # 256, not MetaSchedule's 2,048: minutes of budget on a few cores (docs/tuning.md).
    strategy_options: dict[str, Any] = field(default_factory=lambda: {"population_size": 256})
    # evolutionary: at most this many candidates evolved per trial a task gets (at least 32),
    # below population_size: with 256 per task a 16-trial run on 18 tasks showed its first
    # trial after 561 s, with 32 after 90 s (docs/tuning.md). null: population_size as given.
    population_per_trial: int | None = 16
    # gradient (more trials where the latency is) | round-robin.
    task_scheduler: str = "gradient"
    # xgb | mlp | random, with that cost model's constructor arguments.
    cost_model: str = "xgb"
    cost_model_options: dict[str, Any] = field(default_factory=dict)
    # A name in dlas.tuning.metaschedule.BUILDERS. inprocess: candidates compile in this
    # process on builder_workers threads (null: one per core); a candidate still compiling
    # after builder_timeout_s is recorded as a failed build and the search goes on.
    builder: str = "inprocess"
    builder_workers: int | None = None
    builder_timeout_s: float = 60.0
    # A name in dlas.tuning.metaschedule.RUNNERS. inprocess: timed in this process; local: one
    # worker process that dies with this one.
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
    # Then time the whole tuned build side by side with the untuned one on the device (the
    # run's protocol) and keep the faster: a schedule that won alone, hot, can lose inside the
    # model (dlas.tuning.model_check). Not with tuning.records (they define the build).
    check_whole_model: bool = True
    # Stopping before the trial budget runs out: a task whose best has not improved by
    # stop_min_improvement (a fraction) over stop_patience of its rounds is done (null: never
    # stops early); after max_seconds of tuning (null: no limit) every task is done.
    stop_patience: int | None = 3
    stop_min_improvement: float = 0.01
    max_seconds: float | None = None
    # A records folder, MLflow run id or runs:/<id>/tuning URI to apply instead of tuning.
    records: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        require(self.trials >= 0, "tuning.trials", "must be >= 0", self.trials)
        require(
            self.trials_per_task is None or self.trials_per_task >= 1,
            "tuning.trials_per_task",
            "must be null or >= 1",
            self.trials_per_task,
        )
        require(
            self.population_per_trial is None or self.population_per_trial >= 1,
            "tuning.population_per_trial",
            "must be null or >= 1",
            self.population_per_trial,
        )
        require(
            self.trials_per_iter >= 1,
            "tuning.trials_per_iter",
            "must be >= 1",
            self.trials_per_iter,
        )
        require(
            self.stop_patience is None or self.stop_patience >= 1,
            "tuning.stop_patience",
            "must be null or >= 1",
            self.stop_patience,
        )
        require(
            0 <= self.stop_min_improvement < 1,
            "tuning.stop_min_improvement",
            "must be in [0, 1)",
            self.stop_min_improvement,
        )
        require(
            self.max_seconds is None or self.max_seconds > 0,
            "tuning.max_seconds",
            "must be null or > 0",
            self.max_seconds,
        )
        one_of("tuning.strategy", self.strategy, ("evolutionary", "replay-trace", "replay-func"))
        one_of("tuning.task_scheduler", self.task_scheduler, ("gradient", "round-robin"))
        one_of("tuning.cost_model", self.cost_model, ("xgb", "mlp", "random"))
        require(
            self.builder_workers is None or self.builder_workers >= 1,
            "tuning.builder_workers",
            "must be null or >= 1",
            self.builder_workers,
        )
        require(
            self.builder_timeout_s > 0,
            "tuning.builder_timeout_s",
            "must be > 0",
            self.builder_timeout_s,
        )
        require(
            self.runner_timeout_s > 0,
            "tuning.runner_timeout_s",
            "must be > 0",
            self.runner_timeout_s,
        )
        require(self.runner_number >= 1, "tuning.runner_number", "must be >= 1", self.runner_number)
        require(self.runner_repeat >= 1, "tuning.runner_repeat", "must be >= 1", self.runner_repeat)
        require(
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
        one_of(
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
        require(self.opset >= 11, "tuning.opset", "must be >= 11", self.opset)
        one_of(
            "tuning.graph_optimization",
            self.graph_optimization,
            ("disable", "basic", "extended", "all"),
        )


# --- device (hardware) ---------------------------------------------------------------------
@dataclass
class DeviceConfig:
    name: str = MISSING
    # Which registered device code drives it (dlas.devices.DEVICES: local, cuda, rpc, ...).
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
    # kind=rpc, tuning=metaschedule: boards that measure candidates at once (RPCRunner's
    # max_workers); null: every server registered under the key (1 when reached directly).
    rpc_workers: int | None = None

    def __post_init__(self) -> None:
        require(self.timeout_s > 0, "device.timeout_s", "must be > 0", self.timeout_s)
        require(0 < self.port < 65536, "device.port", "must be in 1..65535", self.port)
        if self.tracker is not None:
            host, _, port = str(self.tracker).rpartition(":")
            require(
                bool(host) and port.isdigit() and 0 < int(port) < 65536,
                "device.tracker",
                "expected HOST:PORT, e.g. 127.0.0.1:9190",
                self.tracker,
            )
        if self.kind == "rpc":
            require(
                bool(self.host or self.tracker),
                "device.tracker",
                "kind=rpc needs device.tracker=HOST:PORT or device.host=HOST",
                self.tracker,
            )
            require(
                bool(self.host or self.key),
                "device.key",
                "a tracker hands out servers by key: set device.key",
                self.key,
            )
        require(
            self.rpc_workers is None or self.rpc_workers >= 1,
            "device.rpc_workers",
            "must be null or >= 1",
            self.rpc_workers,
        )
        require(self.warmup_runs >= 0, "device.warmup_runs", "must be >= 0", self.warmup_runs)
        require(self.timed_runs >= 1, "device.timed_runs", "must be >= 1", self.timed_runs)
        require(
            self.num_threads is None or self.num_threads >= 1,
            "device.num_threads",
            "must be null or >= 1",
            self.num_threads,
        )
