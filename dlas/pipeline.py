"""One DLAS run: a walk down the stack, each stage a function of its own config group.

dataset → model → compression → (export → algorithm → tuning) → device → measure

Each stage returns what it found (:mod:`dlas.results`); :func:`dlas.tracking.record` turns that
into MLflow records as soon as the stage is done, so a run that fails later keeps what the
stages before it found.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from dlas import metrics as m
from dlas import tracking, validity
from dlas.cache import Cache
from dlas.config import Config, validate
from dlas.data import DataBundle, load_dataset
from dlas.devices import Device, Program, Runner, create_device
from dlas.results import Build, Findings, Measurement, PreparedModel
from dlas.search.context import sweep_job_tags
from dlas.serving import log_model

if TYPE_CHECKING:
    import tvm

    from dlas.algorithms import LoweredModule
    from dlas.tuning import TuneContext, Tuner

log = logging.getLogger(__name__)

# Bump when lowering or building changes what a cached library contains.
# 41: blocked convs leave the output channels they pad out of their sums (AVX2);
# 40: ragged 2-pixel x 3-vector tiles on 7-px maps (AVX2);
# 39: sigmoid and SiLU in 12 vector ops (a degree-4 polynomial), x * sigmoid(x) as one silu;
# 38: chunked tiles reduce 16 KiB of weights a pass on AVX2;
# 37: blocked convs reduce only over the input channels with nonzero weights (not the padding);
# 36: more channel vectors in 1-pixel tiles (7-px maps on AVX2);
# 35: the stem's 3-plane pack with its channel loop unrolled, per task where tasks split rows;
# 34: more 2-vector panels (bands of few tiles, wide rows); 33: pointwise panels of 2 vectors;
# 32: 1x1 layers of 512+ input channels in pointwise panels (AVX-512); 31: 3x3 layers on
# small maps take their rows inside each channel chunk;
# 30: sigmoid and SiLU in fewer vector ops, blocked's input gates in 1x1 convs' weights;
# 29: blocked's Winograd F(2x2, 3x3) at 7-13 px; 27-28: a Winograd product over few tiles
# with one vector; 23-26: Winograd's passes, V by position, pad and epilogue by the helpers;
# 13-22 (git log): means by the elements read, depthwise split as the layer before, L1 tiles
BUILD_VERSION = 41
FALLBACKS_FILE = "schedule_fallbacks.json"


def run(cfg: DictConfig, parent_run_id: str | None = None) -> dict[str, float]:
    """Run one configuration and return its metrics. Config and combination errors raise
    before anything is recorded; any later failure is recorded as a FAILED MLflow run."""
    typed = validate(cfg)
    validity.check(typed)
    device = create_device(typed.device)
    device.check_available()
    # sweep_job_tags: the Optuna trial a guided sweep's job runs (dlas.search.context).
    tags = {**device.describe(), **sweep_job_tags()}
    with tracking.start_run(cfg, tags, parent_run_id), device.threads():
        return walk(typed, device)


def walk(cfg: Config, device: Device) -> dict[str, float]:
    cache = Cache(Path(cfg.paths.cache_dir).expanduser().resolve())
    started = time.perf_counter()
    found = Findings()
    if (threads := device.thread_count()) is not None:
        found.metrics[m.DEVICE_THREADS] = float(threads)
    tracking.record(found)

    prepared = prepare_model(cfg, cache)
    found.merge(tracking.record(prepared.findings))
    build = compile_program(cfg, prepared, device, cache)
    found.merge(tracking.record(build.findings))
    if cfg.device.measure:
        found.merge(tracking.record(measure(cfg, prepared, device, build).findings))
    # The program as an MLflow model (tracking.log_model; off with tracking.log_model=false).
    log_model(
        cfg,
        prepared,
        build.program,
        device,
        validate=build.findings.tags.get("compile.cache_hit") != "true",
    )
    found.merge(tracking.record(compare_to_dense(cfg, prepared, found.metrics)))
    return found.merge(
        tracking.record(Findings(metrics={m.RUN_SECONDS: time.perf_counter() - started}))
    ).metrics


# --- ML side: dataset, model, compression --------------------------------------------------
def prepare_model(cfg: Config, cache: Cache) -> PreparedModel:
    from dlas.compression import create_compression
    from dlas.compression.reference import DenseReference
    from dlas.models import evaluate, load_or_train, model_stats
    from dlas.models.registry import resolve_variant, variant_fallback

    found = Findings()
    data = load_dataset(cfg.dataset)
    if variant_fallback(cfg.model.name, cfg.model.variant, cfg.dataset.image_size):
        log.warning(
            "model=%s has no CIFAR form: model.variant=auto uses its ImageNet form at %d px",
            cfg.model.name,
            cfg.dataset.image_size,
        )
        found.tags["model.variant_fallback"] = "imagenet (no CIFAR form)"
    found.tags["model.variant"] = resolve_variant(
        cfg.model.variant, cfg.dataset.image_size, cfg.model.name
    )
    start = time.perf_counter()
    model, origin = load_or_train(cfg.model, cfg.dataset, data, cache)
    found.tags["model.checkpoint_cache_hit"] = str(origin["cache_hit"]).lower()
    found.metrics[m.TRAIN_SECONDS] = time.perf_counter() - start
    checkpoint_spec = origin.get("spec", {})

    compression = create_compression(cfg.compression)
    compression.bind(cache, checkpoint_spec)
    reference = DenseReference.open(cache, checkpoint_spec, cfg.dataset.test_limit)
    if not compression.baseline:  # before apply_torch: pruning works in place
        reference.ensure_pytorch(model, data, cfg.dataset.test_limit)
    dense_stats = model_stats(model, data.spec.shape)
    model = compression.apply_torch(model, data, cfg.dataset.train).eval()
    found.metrics.update(model_stats(model, data.spec.shape))
    found.metrics[m.DENSE_MACS] = dense_stats[m.MACS]
    found.metrics.update(compression.metrics)
    if data.labelled:
        acc = evaluate(model, data, cfg.dataset.test_limit)
        found.metrics[m.PYTORCH_TOP1] = acc["top1"]
        found.metrics[m.PYTORCH_TOP5] = acc["top5"]
    return PreparedModel(data, model, compression, checkpoint_spec, reference, found)


# --- systems side: export, algorithm, tuning, build ----------------------------------------
def build_spec(cfg: Config, prepared: PreparedModel, target: tvm.target.Target) -> dict:
    """Exactly the config a built library depends on."""
    return {
        "build_version": BUILD_VERSION,
        "checkpoint": prepared.checkpoint_spec,
        "compression": prepared.compression.cache_spec(),
        "algorithm": vars(cfg.algorithm),
        "tuning": vars(cfg.tuning),
        "target": str(target),
    }


def compile_program(cfg: Config, prepared: PreparedModel, device: Device, cache: Cache) -> Build:
    from dlas.tuning import TuneContext, create_tuner

    tuner = create_tuner(cfg.tuning)
    ctx = TuneContext(
        cache=cache, work_dir=cache.root / "work", device=device, compression=prepared.compression
    )
    start = time.perf_counter()
    if tuner.uses_tvm:
        # One build per entry, whichever concurrent job gets there first (dlas.cache).
        with cache.lock("compiled", build_spec(cfg, prepared, device.target), ""):
            build = _compile_tvm(cfg, prepared, device, tuner, ctx, cache)
    else:
        log.warning(
            "tuning=%s runs outside TVM: algorithm=%s does not apply to it",
            cfg.tuning.name,
            cfg.algorithm.name,
        )
        program = tuner.wrap(prepared.model, prepared.data.spec, ctx)
        build = Build(program, None, Findings(tags={"dlas.algorithm.applies": "false"}))
    build.findings.metrics[m.COMPILE_SECONDS] = time.perf_counter() - start
    build.findings.metrics.update(ctx.metrics)
    build.findings.files.update(ctx.artifacts)
    return build


def _compile_tvm(
    cfg: Config,
    prepared: PreparedModel,
    device: Device,
    tuner: Tuner,
    ctx: TuneContext,
    cache: Cache,
) -> Build:
    target = device.target
    spec = build_spec(cfg, prepared, target)
    entry = cache.entry("compiled", spec, "")
    library = entry / "model.so"
    hit = library.exists()
    if hit:
        # The device loads it: a library for a remote board's triple may not load here.
        program = device.load_library(library)
        if (entry / "compression.json").exists():
            prepared.compression.restore_relax_report(
                json.loads((entry / "compression.json").read_text())
            )
        if (entry / "tuning.json").exists():
            # What the tuner reported when it built this library; this run tuned nothing.
            ctx.metrics.update(json.loads((entry / "tuning.json").read_text()))
            ctx.metrics.update({"tune/new_trials": 0.0, "tune/seconds": 0.0})
            ctx.metrics.pop("tune/records_lock_wait_s", None)  # this run waited for nothing
    else:
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
            if prepared.compression.needs_calibration
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
        _store_build(entry, spec, mod, lowered, program, cfg, device, prepared, ctx)
        program.library = str(library)
    return Build(program, entry, _build_findings(entry, cfg, hit))


def _store_build(
    entry: Path,
    spec: dict,
    mod: tvm.IRModule,
    lowered: LoweredModule,
    program: Program,
    cfg: Config,
    device: Device,
    prepared: PreparedModel,
    ctx: TuneContext,
) -> None:
    """Write library, per-layer table, IR, and what apply_relax and the tuner found (a cache
    hit skips both) into a fresh folder, then move it into place."""
    import shutil

    tmp = entry.with_name(entry.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    # Linked for the device's triple (its cross compiler, if any).
    device.export_library(program.executable, tmp / "model.so")
    (tmp / "layers.json").write_text(json.dumps(lowered.layers, indent=1, default=str))
    (tmp / FALLBACKS_FILE).write_text(json.dumps(lowered.schedule_fallbacks(), indent=1))
    from dlas.profile import KERNELS_FILE, kernel_costs  # the profile's GFLOP/s per kernel

    (tmp / KERNELS_FILE).write_text(json.dumps(kernel_costs(lowered.mod)))
    (tmp / "compression.json").write_text(
        json.dumps(prepared.compression.relax_report(), default=str)
    )
    tuned = {k: v for k, v in ctx.metrics.items() if k.startswith("tune/")}
    if tuned:
        (tmp / "tuning.json").write_text(json.dumps(tuned, indent=1))
    if cfg.tracking.log_ir:
        (tmp / "relax.py").write_text(mod.script(show_meta=False))
        (tmp / "lowered.py").write_text(lowered.mod.script(show_meta=False))
    (tmp / "spec.json").write_text(json.dumps(spec, indent=1, default=str))
    if entry.exists():
        shutil.rmtree(entry)
    tmp.rename(entry)


def _build_findings(entry: Path, cfg: Config, cache_hit: bool) -> Findings:
    found = Findings(tags={"compile.cache_hit": str(cache_hit).lower()})
    layers = json.loads((entry / "layers.json").read_text())
    if layers:
        found.tables["algorithm/layers.json"] = {
            # Every column any row has (e.g. ``kernel`` on int8 rows, ``compute`` on blocked ones).
            k: [str(row.get(k, "")) for row in layers]
            for k in dict.fromkeys(k for row in layers for k in row)
        }
        found.metrics["algorithm/fallback_layers"] = sum(1 for row in layers if row.get("fallback"))
    if (entry / FALLBACKS_FILE).exists():  # kernels whose algorithm schedule raised
        fallbacks = json.loads((entry / FALLBACKS_FILE).read_text())
        found.metrics["algorithm/schedule_fallbacks"] = len(fallbacks)
        if fallbacks:
            found.documents[f"algorithm/{FALLBACKS_FILE}"] = fallbacks
    if cfg.tracking.log_library:
        found.files["compiled/model.so"] = entry / "model.so"
    for name in ("relax.py", "lowered.py"):
        if (entry / name).exists():
            found.files[f"ir/{name}"] = entry / name
    return found


# --- hardware: latency and accuracy on the device ------------------------------------------
def measure(cfg: Config, prepared: PreparedModel, device: Device, build: Build) -> Measurement:
    from dlas.measure import compiled_accuracy, latency_stats, load_per_core, logit_agreement, noise

    data = prepared.data
    found = Findings()
    eager = None
    if cfg.eval.eager_baseline and device.cfg.kind == "local":
        eager = _eager_program(prepared, device)
    with device.load(build.program) as runner:
        load_before = load_per_core()
        samples, eager_samples, eager_metrics = _time(cfg, data, runner, device, eager)
        found.metrics.update(eager_metrics)
        loads = (load_before, load_per_core())
        found.metrics.update(latency_stats(samples))
        found.metrics["host/load_per_core_before"], found.metrics["host/load_per_core_after"] = (
            loads
        )
        why = noise(found.metrics, loads, cfg.eval.noisy_ci_fraction, cfg.eval.noisy_load)
        found.metrics[m.NOISY] = float(bool(why))
        found.tags["latency.noisy"] = why or "false"
        if why:
            log.warning("latency measurement is noisy: %s", why)
        found.documents["latency/samples.json"] = {
            "unit": "ms",
            "warmup_runs": cfg.device.warmup_runs,
            "samples": samples,
            **({"pytorch_eager_samples": eager_samples} if eager_samples else {}),
            "load_per_core": {"before": loads[0], "after": loads[1]},
        }
        if data.labelled:
            found.metrics.update(compiled_accuracy(runner, data, cfg.dataset.test_limit))
        found.metrics.update(
            logit_agreement(runner, prepared.model, data, cfg.eval.compare_samples)
        )
    found.metrics.update(device.timing_metrics())  # latency/lock_wait_s (dlas.devices.exclusive)
    # perf/gflops, perf/fraction_of_peak (roofline) and the profile/layers table.
    from dlas.perf import perf_findings

    found.merge(perf_findings(cfg, prepared, device, build.program, build.entry, found.metrics))
    return Measurement(samples, found)


def _time(
    cfg: Config,
    data: DataBundle,
    runner: Runner,
    device: Device,
    eager: Program | None,
) -> tuple[list[float], list[float], dict[str, float]]:
    """The program's latency samples; with ``eager``, PyTorch eager's too, timed in blocks that
    take turns with the program's (measure.side_by_side), so that a change in the machine's
    speed reaches both and stays out of their ratio; and the metrics of that comparison."""
    import numpy as np

    from dlas.measure import first_input, measure_latency, side_by_side, speedup

    warmup, repeat = cfg.device.warmup_runs, cfg.device.timed_runs
    if eager is None:
        return measure_latency(runner, data, warmup, repeat), [], {}
    with device.load(eager) as eager_runner:
        times, calls = side_by_side(
            {"eager": eager_runner, "program": runner}, first_input(data), warmup, repeat
        )
    ratio = speedup(times["program"], times["eager"], calls)
    metrics = {
        m.EAGER_LATENCY: float(np.median(times["eager"])),
        m.SPEEDUP_VS_EAGER: ratio.ratio,
        m.SPEEDUP_VS_EAGER_CI_LOW: ratio.low,
        m.SPEEDUP_VS_EAGER_CI_HIGH: ratio.high,
    }
    return times["program"], times["eager"], metrics


def _eager_program(prepared: PreparedModel, device: Device) -> Program:
    """PyTorch eager (the tuning=pytorch baseline) on the same model, input, protocol and
    threads, in this process."""
    from dlas.config.schema import TuningConfig
    from dlas.tuning import TuneContext, create_tuner

    eager = create_tuner(TuningConfig(name="pytorch"))
    return eager.wrap(prepared.model, prepared.data.spec, TuneContext(device=device))


def compare_to_dense(cfg: Config, prepared: PreparedModel, metrics: dict[str, float]) -> Findings:
    """Compression metrics and per-layer tables (both sides), and the drop vs dense: a dense
    run becomes the reference of the compressed runs of its checkpoint."""
    compression = prepared.compression
    found = Findings(
        metrics=dict(compression.metrics),
        tags=dict(compression.tags),
        tables=dict(compression.tables),
    )
    if compression.baseline:
        made_by = {"algorithm": cfg.algorithm.name, "tuning": cfg.tuning.name}
        prepared.reference.record_dense(metrics, {**made_by, "device": cfg.device.name})
        return found
    drops, kind = prepared.reference.drops(metrics)
    found.metrics.update(drops)
    if kind:
        found.tags["accuracy.dense_reference"] = kind
    return found
