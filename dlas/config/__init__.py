"""Config schemas and the checks that run before any stage does work."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlas.config.schema import Config, ConfigError, register_schemas

__all__ = ["Config", "ConfigError", "register_schemas", "validate"]


def validate(cfg: DictConfig) -> Config:
    """Instantiate the schemas (running their range checks) and return the typed config.

    Also refuses keys that a schema does not declare: Hydra lets `+group.key=value` add them
    even to structured configs, and a mistyped option must not be silently ignored."""
    try:
        typed = OmegaConf.to_object(cfg)
    except Exception as exc:  # OmegaConf wraps __post_init__ errors; surface ours unwrapped
        cause = exc if isinstance(exc, ConfigError) else exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
    _refuse_unknown_keys(cfg, typed, "")
    return typed


def _refuse_unknown_keys(node: DictConfig, obj: Any, prefix: str) -> None:
    if not dataclasses.is_dataclass(obj):
        return
    fields = {f.name for f in dataclasses.fields(obj)}
    for key in node:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"{prefix}{key} is not an option of {type(obj).__name__}{hint}. "
                f"Allowed: {', '.join(sorted(fields))}."
            )
        child = node[key]
        if isinstance(child, DictConfig):
            _refuse_unknown_keys(child, getattr(obj, key), f"{prefix}{key}.")
