"""One DLAS run: a walk down the stack, each stage a function of its own config group.

dataset → model → compression → (export → algorithm → tuning) → device → measure → MLflow
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from dlas import tracking, validity
from dlas.cache import Cache
from dlas.config import Config, validate
from dlas.data import DataBundle, load_dataset
from dlas.devices import Device, Program, create_device

log = logging.getLogger(__name__)

# Bump when lowering or building changes what a cached library contains.
BUILD_VERSION = 2


@dataclass
class Prepared:
    """What the ML half of the stack hands to the systems half."""

    data: DataBundle
    model: torch.nn.Module
    compression: Any
    checkpoint_spec: dict
    # Dense baseline of the same checkpoint (dlas.compression.reference.DenseReference).
    reference: Any = None


def run(cfg: DictConfig, parent_run_id: str | None = None) -> dict[str, float]:
    """Run one configuration and return its metrics. Config and combination errors raise
    before anything is recorded; any later failure is recorded as a FAILED MLflow run."""
    typed = validate(cfg)
    validity.check(typed)
    device = create_device(typed.device)
    device.check_available()
    with tracking.start_run(cfg, device.describe(), parent_run_id):
        return walk(typed, device)


def walk(cfg: Config, device: Device) -> dict[str, float]:
    import mlflow

    cache = Cache(Path(cfg.paths.cache_dir).expanduser().resolve())
    metrics: dict[str, float] = {}
    started = time.perf_counter()

    prepared = prepare_model(cfg, cache, metrics)
    program = compile_program(cfg, prepared, device, cache, metrics)
    if cfg.device.measure:
        measure(cfg, prepared, device, program, metrics)
    _log_compression(cfg, prepared, metrics)
    metrics["run/seconds"] = time.perf_counter() - started
    mlflow.log_metrics(metrics)
    return metrics


# --- ML side: dataset, model, compression --------------------------------------------------
def prepare_model(cfg: Config, cache: Cache, metrics: dict[str, float]) -> Prepared:
    import mlflow

    from dlas.compression import create_compression
    from dlas.compression.reference import DenseReference
    from dlas.models import evaluate, load_or_train, model_stats

    data = load_dataset(cfg.dataset)
    start = time.perf_counter()
    model, origin = load_or_train(cfg.model, cfg.dataset, data, cache)
    mlflow.set_tag("model.checkpoint_cache_hit", str(origin["cache_hit"]).lower())
    metrics["train/seconds"] = time.perf_counter() - start

    compression = create_compression(cfg.compression)
    compression.bind(cache, origin.get("spec", {}))
    reference = DenseReference.open(cache, origin.get("spec", {}), cfg.dataset.test_limit)
    if not compression.baseline:  # before apply_torch: pruning works in place
        reference.ensure_pytorch(model, data, cfg.dataset.test_limit)
    dense_stats = model_stats(model, data.spec.shape)
    model = compression.apply_torch(model, data, cfg.dataset.train).eval()
    stats = model_stats(model, data.spec.shape)
    metrics.update(stats)
    metrics["model/dense_macs"] = dense_stats["model/macs"]
    metrics.update(compression.metrics)
    if data.labelled:
        acc = evaluate(model, data, cfg.dataset.test_limit)
        metrics["accuracy/pytorch_top1"] = acc["top1"]
        metrics["accuracy/pytorch_top5"] = acc["top5"]
    return Prepared(data, model, compression, origin.get("spec", {}), reference)


# --- systems side: export, algorithm, tuning, build ----------------------------------------
def build_spec(cfg: Config, prepared: Prepared, target: Any) -> dict:
    """Exactly the config a built library depends on."""
    return {
        "build_version": BUILD_VERSION,
        "checkpoint": prepared.checkpoint_spec,
        "compression": prepared.compression.cache_spec(),
        "algorithm": vars(cfg.algorithm),
        "tuning": vars(cfg.tuning),
        "target": str(target),
    }


def compile_program(
    cfg: Config, prepared: Prepared, device: Device, cache: Cache, metrics: dict[str, float]
) -> Program:
    import mlflow

    from dlas.tuning import TuneContext, create_tuner

    tuner = create_tuner(cfg.tuning)
    work_dir = cache.root / "work"
    ctx = TuneContext(
        cache=cache, work_dir=work_dir, device=device, compression=prepared.compression
    )
    start = time.perf_counter()
    if not tuner.uses_tvm:
        mlflow.set_tag("dlas.algorithm.applies", "false")
        log.warning(
            "tuning=%s runs outside TVM: algorithm=%s does not apply to it",
            cfg.tuning.name,
            cfg.algorithm.name,
        )
        program = tuner.wrap(prepared.model, prepared.data.spec, ctx)
    else:
        program = _compile_tvm(cfg, prepared, device, tuner, ctx, cache)
    metrics["compile/seconds"] = time.perf_counter() - start
    metrics.update(ctx.metrics)
    for name, path in ctx.artifacts.items():
        (mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact)(str(path), name)
    return program


def _compile_tvm(
    cfg: Config, prepared: Prepared, device: Device, tuner: Any, ctx: Any, cache: Cache
) -> Program:
    import mlflow

    target = device.target
    spec = build_spec(cfg, prepared, target)
    entry = cache.entry("compiled", spec, "")
    library = entry / "model.so"
    if library.exists():
        mlflow.set_tag("compile.cache_hit", "true")
        # The device loads it: a library for a remote board's triple may not load here.
        program = device.load_library(library)
        if (entry / "compression.json").exists():
            prepared.compression.restore_relax_report(
                json.loads((entry / "compression.json").read_text())
            )
    else:
        mlflow.set_tag("compile.cache_hit", "false")
        from dlas.algorithms import lower
        from dlas.compiler.export import export

        mod = export(prepared.model, prepared.data.spec)
        calibration = (
            [
                x.numpy()
                for x in prepared.data.calibration_batches(
                    cfg.dataset.calibration_samples, batch_size=1
                )
            ]
            if _needs_calibration(prepared)
            else []
        )
        mod = prepared.compression.apply_relax(mod, calibration)
        # The algorithm layer's default schedules are CPU ones; GPU targets get dlight's in
        # the build (dlas.compiler.build), which only schedules what is still unscheduled.
        lowered = lower(
            mod,
            cfg.algorithm,
            target,
            schedule=tuner.default_schedules and target.kind.name == "llvm",
        )
        prepared.compression.report_lowering(lowered.layers)  # e.g. int8 instruction family
        program = tuner.compile(lowered, target, ctx)
        _store_build(entry, spec, mod, lowered, program, cfg, device)
        # What apply_relax found (quantized layers...): a cache hit skips apply_relax.
        (entry / "compression.json").write_text(
            json.dumps(prepared.compression.relax_report(), default=str)
        )
        program.library = str(library)
    _log_build(entry, cfg)
    return program


def _needs_calibration(prepared: Prepared) -> bool:
    return bool(getattr(prepared.compression, "needs_calibration", False))


def _store_build(
    entry: Path, spec: dict, mod: Any, lowered: Any, program: Program, cfg: Config, device: Device
) -> None:
    """Write library, per-layer table and IR into a fresh folder, then move it into place."""
    tmp = entry.with_name(entry.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    # Linked for the device's triple (its cross compiler, if any).
    device.export_library(program.executable, tmp / "model.so")
    (tmp / "layers.json").write_text(json.dumps(lowered.layers, indent=1, default=str))
    if cfg.tracking.log_ir:
        (tmp / "relax.py").write_text(mod.script(show_meta=False))
        (tmp / "lowered.py").write_text(lowered.mod.script(show_meta=False))
    (tmp / "spec.json").write_text(json.dumps(spec, indent=1, default=str))
    if entry.exists():
        import shutil

        shutil.rmtree(entry)
    tmp.rename(entry)


def _log_build(entry: Path, cfg: Config) -> None:
    import mlflow

    layers = json.loads((entry / "layers.json").read_text())
    if layers:
        mlflow.log_table(
            {k: [str(row.get(k, "")) for row in layers] for k in layers[0]}, "algorithm/layers.json"
        )
        fallbacks = sum(1 for row in layers if row.get("fallback"))
        mlflow.log_metric("algorithm/fallback_layers", fallbacks)
    if cfg.tracking.log_library:
        mlflow.log_artifact(str(entry / "model.so"), "compiled")
    for name in ("relax.py", "lowered.py"):
        if (entry / name).exists():
            mlflow.log_artifact(str(entry / name), "ir")


def _log_compression(cfg: Config, prepared: Prepared, metrics: dict[str, float]) -> None:
    """Compression metrics and per-layer tables (both sides), and the drop vs dense."""
    import mlflow

    compression = prepared.compression
    metrics.update(compression.metrics)
    for name, table in compression.tables.items():
        mlflow.log_table(table, name)
    mlflow.set_tags(compression.tags)
    if prepared.reference is None:
        return
    if compression.baseline:
        prepared.reference.record_dense(
            metrics,
            {"algorithm": cfg.algorithm.name, "tuning": cfg.tuning.name, "device": cfg.device.name},
        )
        return
    drops, kind = prepared.reference.drops(metrics)
    metrics.update(drops)
    if kind:
        mlflow.set_tag("accuracy.dense_reference", kind)


# --- hardware: latency and accuracy on the device ------------------------------------------
def measure(
    cfg: Config, prepared: Prepared, device: Device, program: Program, metrics: dict[str, float]
) -> None:
    import mlflow

    from dlas.measure import compiled_accuracy, latency_stats, logit_agreement, measure_latency

    data = prepared.data
    if cfg.eval.eager_baseline and device.cfg.kind == "local":
        # Timed first: TVM's worker threads keep spinning for a while after each call and
        # would steal the cores from PyTorch's OpenMP threads.
        metrics["latency/pytorch_eager_median_ms"] = _eager_latency(cfg, prepared)
    with device.load(program) as runner:
        samples = measure_latency(runner, data, cfg.device.warmup_runs, cfg.device.timed_runs)
        metrics.update(latency_stats(samples))
        mlflow.log_dict(
            {"unit": "ms", "warmup_runs": cfg.device.warmup_runs, "samples": samples},
            "latency/samples.json",
        )
        if data.labelled:
            metrics.update(compiled_accuracy(runner, data, cfg.dataset.test_limit))
        metrics.update(logit_agreement(runner, prepared.model, data, cfg.eval.compare_samples))
    if "latency/pytorch_eager_median_ms" in metrics:
        metrics["latency/speedup_vs_eager"] = (
            metrics["latency/pytorch_eager_median_ms"] / metrics["latency/median_ms"]
        )


def _eager_latency(cfg: Config, prepared: Prepared) -> float:
    """PyTorch eager on the same model, input and protocol, in this process."""
    from dlas.devices.local_cpu import PythonRunner

    model = prepared.model

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    x = next(iter(prepared.data.test_loader(batch_size=1)))[0].numpy()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.device.num_threads or threads)  # the same cores TVM gets
    try:
        samples = PythonRunner(forward).time(x, cfg.device.warmup_runs, cfg.device.timed_runs)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(samples))
