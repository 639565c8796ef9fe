"""Config schemas and the checks that run before any stage does work."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from dlas.config.schema import Config, ConfigError, register_schemas

__all__ = ["Config", "ConfigError", "register_schemas", "validate"]


def validate(cfg: DictConfig) -> Config:
    """Instantiate the schemas (running their range checks) and return the typed config."""
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf wraps __post_init__ errors; surface ours unwrapped
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
