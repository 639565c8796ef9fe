"""Whether a combination can run, answered by THE rules: compose the job config as the launcher
would, check the schemas (:func:`dlas.config.validate`) and :func:`dlas.validity.problems`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dlas.search.space import Verdict

log = logging.getLogger(__name__)

_ABSENT = object()


def task_config(cfg: DictConfig) -> DictConfig:
    """The config a job's task function sees: the composed one without its ``hydra`` node."""
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def config_problems(cfg: DictConfig) -> list[str]:
    """Why this composed task config cannot run (empty: it can)."""
    from dlas import validity
    from dlas.config import ConfigError, validate

    try:
        typed = validate(cfg)
    except ConfigError as exc:
        return [str(exc)]
    return validity.problems(typed)


@dataclass
class Inspection:
    """One composed combination: why it cannot run (empty: it can), its task config and the
    option chosen in each config group (``compression`` → ``dense``)."""

    problems: list[str]
    cfg: DictConfig | None = None
    choices: dict[str, str] = field(default_factory=dict)


class Oracle:
    """Base class: answers for one combination of overrides (see :class:`Inspection`)."""

    def inspect(self, overrides: Sequence[str]) -> Inspection:
        raise NotImplementedError

    def present(self, seen: Inspection, probes: Sequence[str]) -> set[str]:
        """Which of ``probes`` (dotted keys) exist in the combination's config."""
        if seen.cfg is None:
            return set()
        return {k for k in probes if OmegaConf.select(seen.cfg, k, default=_ABSENT) is not _ABSENT}

    def __call__(self, overrides: list[str], probes: Sequence[str] = ()) -> Verdict:
        seen = self.inspect(overrides)
        return Verdict(seen.problems, self.present(seen, probes))


class ComposeOracle(Oracle):
    """Composes ``fixed + overrides`` with ``compose`` and asks the validity rules.

    A combination that does not even compose (a key one option's schema lacks) is invalid too,
    with Hydra's message as the reason.
    """

    def __init__(
        self, compose: Callable[[list[str]], DictConfig], fixed: Sequence[str] = ()
    ) -> None:
        self.compose = compose
        self.fixed = list(fixed)

    def inspect(self, overrides: Sequence[str]) -> Inspection:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            cfg = self.compose(self.fixed + list(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            return Inspection([f"does not compose: {str(exc).splitlines()[0]}"])
        choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
        choices = {str(k): str(v) for k, v in (choices or {}).items() if "/" not in str(k)}
        cfg = task_config(cfg)
        return Inspection(config_problems(cfg), cfg, choices)


def sweep_compose(
    config_loader: object, master_config: DictConfig
) -> Callable[[list[str]], DictConfig]:
    """Compose a job config exactly as Hydra's launchers do."""

    def compose(overrides: list[str]) -> DictConfig:
        return config_loader.load_sweep_config(  # type: ignore[attr-defined]
            master_config=master_config, sweep_overrides=list(overrides)
        )

    return compose
