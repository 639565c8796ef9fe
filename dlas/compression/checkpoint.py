"""What the pruning options share: fine-tuning and the compressed-checkpoint cache.

A pruned and fine-tuned model depends only on the trained checkpoint and the compression
config, so it is cached under a key of those two: a rerun with another algorithm, tuner or
device loads it instead of pruning and fine-tuning again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlas.cache import entry_lock, write_atomic
from dlas.compression.base import Compression
from dlas.config.schema import PruningConfig, TrainConfig
from dlas.data import DataBundle
from dlas.models.train import train

log = logging.getLogger(__name__)

# Bump when pruning or fine-tuning code changes what a cached compressed checkpoint holds.
COMPRESSION_VERSION = 1


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers: the weights both pruning options act on."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def finetune_lr(cfg: PruningConfig, train_cfg: TrainConfig) -> float:
    """The configured LR, else the dataset's training LR (decayed over the fine-tuning epochs by
    the training schedule): on digits, a tenth of it left ResNet18 at -30 points after 50%
    channel pruning where the full LR recovers to -1."""
    return cfg.finetune_lr if cfg.finetune_lr is not None else train_cfg.lr


def checkpoint_path(
    compression: Compression, train_cfg: TrainConfig, extra: dict[str, Any] | None = None
) -> Path | None:
    """Cache entry of the compressed checkpoint, or None when the run has no cache (tests).
    Keyed by the effective fine-tuning LR, so null and its explicit value share the entry."""
    if compression.cache is None or not compression.checkpoint_spec:
        return None
    config = compression.cache_spec()
    if "finetune_lr" in config:
        config["finetune_lr"] = finetune_lr(compression.cfg, train_cfg)
    spec = {
        "compression_version": COMPRESSION_VERSION,
        "checkpoint": compression.checkpoint_spec,
        "compression": config,
        **(extra or {}),
    }
    return compression.cache.entry("compressed", spec, ".pt")


def producing(path: Path | None) -> Any:
    """The entry's lock from the cache look-up to :func:`store` (nothing without a cache)."""
    return entry_lock(path) if path is not None else contextlib.nullcontext()


def load_cached(compression: Compression, model: nn.Module, path: Path | None) -> bool:
    """Load the cached compressed weights into ``model`` (already of the compressed shape)."""
    if path is None or not path.exists():
        return False
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:  # a stale entry (other shapes) is recomputed, not trusted
        log.warning("ignoring cached compressed checkpoint %s: %s", path, exc)
        return False
    return True


def store(compression: Compression, model: nn.Module, path: Path | None, **facts: Any) -> None:
    if path is None:
        return
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    write_atomic(path, buf.getvalue())
    assert compression.cache is not None
    compression.cache.describe(
        path,
        {"checkpoint": compression.checkpoint_spec, "compression": compression.cache_spec()},
        **facts,
    )


def finetune(
    model: nn.Module,
    data: DataBundle,
    train_cfg: TrainConfig,
    cfg: PruningConfig,
    hook: Callable[[nn.Module], None] | None = None,
) -> dict[str, float]:
    """The dataset's training recipe for ``cfg.finetune_epochs`` epochs, with ``hook`` after
    every optimizer step. Returns timing metrics."""
    if cfg.finetune_epochs == 0 or data.train is None:
        return {"compression/finetune_epochs": 0.0}
    lr = finetune_lr(cfg, train_cfg)
    start = time.perf_counter()
    train(
        model,
        data,
        train_cfg,
        epochs=cfg.finetune_epochs,
        lr=lr,
        desc=f"fine-tune {cfg.name}",
        hook=hook,
    )
    return {
        "compression/finetune_epochs": float(cfg.finetune_epochs),
        "compression/finetune_lr": lr,
        "compression/finetune_seconds": time.perf_counter() - start,
    }
