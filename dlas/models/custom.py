"""``model=custom model.source=path/to/file.py:build`` (or ``package.module:build``): the user's
own network, a callable that returns an ``nn.Module`` given the number of classes.

The source file's content (the module's file for ``package.module``) is part of the trained
checkpoint's key, so editing the network retrains it and nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from torch import nn

from dlas.models.registry import MODELS

FORM = "path/to/file.py:callable or package.module:callable"


class ModelSourceError(ValueError):
    """``model.source`` cannot be read, imported or called as documented."""


def split_source(source: str) -> tuple[str, str]:
    target, sep, attr = str(source).rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ModelSourceError(f"model.source={source!r} is invalid: expected {FORM}")
    return target, attr


def is_file_source(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def source_file(source: str) -> Path | None:
    """The Python file ``source`` names, or for ``package.module`` the module's file (None
    when the module is not importable: reported by :func:`load_builder`)."""
    target, _ = split_source(source)
    if is_file_source(target):
        return Path(target).expanduser().resolve()
    spec = importlib.util.find_spec(target)
    return Path(spec.origin) if spec and spec.origin else None


def source_digest(source: str) -> str:
    path = source_file(source)
    if path is None or not path.is_file():
        raise ModelSourceError(f"model.source={source!r}: cannot read {path or source}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_builder(source: str) -> Callable[[int], nn.Module]:
    target, attr = split_source(source)
    if is_file_source(target):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ModelSourceError(
                f"model.source={source!r}: no such file {path} (expected {FORM})"
            )
        module = _module_from_file(str(path), source_digest(source))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelSourceError(
                f"model.source={source!r}: cannot import module {target!r} ({exc}); expected {FORM}"
            ) from exc
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise ModelSourceError(
            f"model.source={source!r}: {target} has no callable {attr!r} (expected {FORM})"
        )
    return builder


@lru_cache(maxsize=16)
def _module_from_file(path: str, digest: str):
    # Keyed by content: an edited file is imported afresh, under a name of its own.
    name = f"dlas_custom_{digest[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def build_custom(source: str, num_classes: int) -> nn.Module:
    """The user's network, or an error naming the source and what was expected."""
    builder = load_builder(source)
    model = builder(num_classes)
    if not isinstance(model, nn.Module):
        raise ModelSourceError(
            f"model.source={source!r}: {split_source(source)[1]}({num_classes}) returned "
            f"{type(model).__name__}; expected a torch.nn.Module (called with the number of "
            "classes)"
        )
    return model


@MODELS.register("custom")
def _registered(num_classes: int, variant: str) -> nn.Module:
    """model=custom builds the callable named by model.source: its config, not a name, says what to build
    (dlas.models.sources.build_model); the registry entry makes the option a known one."""
    raise ValueError(
        "model=custom is built from its config (model.source); use "
        "dlas.models.build_model(model_cfg, num_classes, image_size)"
    )
