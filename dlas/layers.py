"""The six DLAS layers, declared once: config group, schema, registry, factory, base class.

Everything that walks the layers (run tags and names, validity rules, ``--help``, the sweep
summary, the contract tests) reads this table instead of keeping its own list. Registries and
factories are named as ``module:attribute`` and imported on first use, so that importing this
table stays cheap (the Hydra plugins and the CLI read it before torch or TVM are needed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlas.config.schema import (
    AlgorithmConfig,
    CompressionConfig,
    DatasetConfig,
    DeviceConfig,
    ModelConfig,
    TuningConfig,
)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Layer:
    group: str  # Hydra config group and attribute of dlas.config.Config
    title: str  # the layer's name in the DLAS study
    schema: type  # base dataclass of the group's options
    registry_ref: str  # "module:attribute" of the layer's Registry
    # "module:attribute" of create(layer_cfg) -> implementation (None: no object to build).
    factory_ref: str | None
    # "module:attribute" of the class every registered implementation subclasses (None: the
    # registry holds plain functions).
    base_ref: str | None = None
    # Config field that picks the registered implementation (device YAMLs name a board; their
    # `kind` picks the code that drives it).
    key: str = "name"
    # Config groups the factory takes, in order (empty: its own).
    factory_args: tuple[str, ...] = ()
    # Whether the layer's choice changes the trained model (runs that differ only in other
    # layers share one trained checkpoint and one dense baseline).
    shapes_model: bool = False
    # Said after the registered names when they are too many to list.
    more: str = ""

    @property
    def registry(self) -> Any:
        return _resolve(self.registry_ref)

    @property
    def factory(self) -> Callable[[Any], Any] | None:
        return _resolve(self.factory_ref) if self.factory_ref else None

    @property
    def base(self) -> type | None:
        return _resolve(self.base_ref) if self.base_ref else None

    def choice(self, cfg: Any) -> str:
        """The option name a run picked for this layer (what tags and run names show)."""
        return str(getattr(cfg, self.group).name)

    def build(self, cfg: Any) -> Any:
        """The layer's implementation for a typed config (what the pipeline would create)."""
        factory = self.factory
        if factory is None:
            raise TypeError(f"layer {self.group} has no factory")
        return factory(*(getattr(cfg, group) for group in self.factory_args or (self.group,)))

    def implementation(self, layer_cfg: Any) -> str:
        """The registered name ``layer_cfg`` asks for."""
        return str(getattr(layer_cfg, self.key))

    def registered(self) -> list[str]:
        """Names the registry accepts (models: dlas's own and every torchvision classifier)."""
        if self.group == "model":
            from dlas.models import available_models

            return available_models()
        return self.registry.names()


LAYERS: tuple[Layer, ...] = (
    Layer(
        "dataset", "dataset", DatasetConfig, "dlas.data:DATASETS", "dlas.data:load_dataset",
        shapes_model=True,
    ),
    Layer(
        "model", "model", ModelConfig, "dlas.models:MODELS", "dlas.models:model_from_config",
        factory_args=("model", "dataset"), shapes_model=True,
        more="any torchvision classifier: model=torchvision model.name=<name>",
    ),
    Layer(
        "compression", "model optimization", CompressionConfig,
        "dlas.compression:COMPRESSIONS", "dlas.compression:create_compression",
        "dlas.compression:Compression",
    ),
    Layer(
        "algorithm", "algorithms & data formats", AlgorithmConfig,
        "dlas.algorithms:ALGORITHMS", "dlas.algorithms:resolve", "dlas.algorithms:Algorithm",
    ),
    Layer(
        "tuning", "systems software", TuningConfig, "dlas.tuning:TUNERS",
        "dlas.tuning:create_tuner", "dlas.tuning:Tuner",
    ),
    Layer(
        "device", "hardware", DeviceConfig, "dlas.devices:DEVICES", "dlas.devices:create_device",
        "dlas.devices:Device", key="kind",
    ),
)  # fmt: skip

GROUPS: tuple[str, ...] = tuple(layer.group for layer in LAYERS)
# Layers whose choice changes the trained model (hence the dense baseline of a drop).
MODEL_GROUPS: tuple[str, ...] = tuple(layer.group for layer in LAYERS if layer.shapes_model)


def layer(group: str) -> Layer:
    for entry in LAYERS:
        if entry.group == group:
            return entry
    raise KeyError(f"no DLAS layer {group!r}; layers: {', '.join(GROUPS)}")


def choices(cfg: Any) -> dict[str, str]:
    """group -> option name, for every layer of a composed or typed config."""
    return {entry.group: entry.choice(cfg) for entry in LAYERS}
