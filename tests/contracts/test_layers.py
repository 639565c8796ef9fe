"""Contracts every option of every layer honours, picked up from the layer table and the config
files (timm's registry-as-test-matrix, Optuna's shared suites): adding an option is one module
plus one YAML, and forgetting either fails here."""

from __future__ import annotations

import dataclasses
import inspect
from importlib import resources

import pytest
from omegaconf import OmegaConf

from dlas import validity
from dlas.cli import options
from dlas.config import validate
from dlas.data import DataNotFoundError
from dlas.layers import LAYERS, layer

# What each option needs beside it to form a valid run (the rest stays at the defaults).
COMPANIONS = {
    ("compression", "int8"): ["algorithm=direct"],
    # A CPU with AVX512-BF16, whatever this host is (a host without it refuses bf16: the
    # refusal has its own test in tests/compression/test_low_precision.py).
    ("compression", "bf16"): ["device.target.mcpu=sapphirerapids"],
    ("algorithm", "sparse_direct"): ["compression=weight_pruning"],
    ("algorithm", "sparse_gemm"): ["compression=weight_pruning"],
    ("algorithm", "sparse_spatial_pack"): ["compression=weight_pruning"],
}


def chosen(group: str, option: str) -> str:
    """The registered name an option's YAML asks for: its ``name`` (a device's ``kind``), or
    the schema's default when the YAML leaves it out."""
    entry = layer(group)
    node = OmegaConf.create((resources.files("dlas.conf") / group / f"{option}.yaml").read_text())
    default = {f.name: f.default for f in dataclasses.fields(entry.schema)}[entry.key]
    return str(node.get(entry.key, default))


def every_option() -> list[tuple[str, str]]:
    return [(entry.group, option) for entry in LAYERS for option in options(entry.group)]


@pytest.mark.parametrize(("group", "option"), every_option())
def test_every_yaml_names_registered_code(group, option):
    entry = layer(group)
    name = chosen(group, option)
    assert name in entry.registered(), (
        f"conf/{group}/{option}.yaml asks for {entry.key}={name!r}, which nothing registers: "
        f"add a module that registers it in {entry.registry_ref.split(':')[0].replace('.', '/')}/ "
        "and import that module in the package's __init__.py"
    )


@pytest.mark.parametrize("entry", LAYERS, ids=lambda e: e.group)
def test_every_registered_name_has_a_yaml(entry):
    named = {chosen(entry.group, option) for option in options(entry.group)}
    missing = [name for name in entry.registry.names() if name not in named]
    assert not missing, (
        f"registered {entry.group} option(s) {missing} have no conf/{entry.group}/<name>.yaml "
        f"naming them ({entry.key}: <name>): add one, with its schema in the defaults list"
    )


@pytest.fixture(scope="module")
def own_models(tmp_path_factory) -> dict[tuple[str, str], list[str]]:
    """The files the bring-your-own model options point at: a Python builder, an ONNX file."""
    import warnings

    import torch

    from dlas.models.zoo import TinyCNN

    folder = tmp_path_factory.mktemp("own-models")
    (folder / "net.py").write_text(
        "from dlas.models.zoo import TinyCNN\n\ndef build(num_classes):\n"
        "    return TinyCNN(num_classes)\n"
    )
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(
        TinyCNN(10).eval(), (torch.zeros(1, 3, 32, 32),), str(folder / "net.onnx"), dynamo=False
    )
    return {
        ("model", "custom"): [f"model.source={folder / 'net.py'}:build"],
        ("model", "onnx"): [f"model.path={folder / 'net.onnx'}"],
    }


@pytest.mark.parametrize(("group", "option"), every_option())
def test_every_option_builds_from_its_composed_config(compose_cfg, own_models, group, option):
    extra = COMPANIONS.get((group, option), []) + own_models.get((group, option), [])
    overrides = [f"{group}={option}", *extra]
    typed = validate(compose_cfg(*overrides))
    assert validity.problems(typed) == []
    entry = layer(group)
    try:
        built = entry.build(typed)
    except DataNotFoundError as exc:  # a data set whose files are not here: named, not built
        assert group == "dataset" and typed.dataset.root in str(exc)
        return
    if entry.base is not None:
        assert isinstance(built, entry.base)
    if group == "model":
        import torch

        assert isinstance(built, torch.nn.Module)
    if group == "dataset":
        from dlas.data import DataBundle

        assert isinstance(built, DataBundle)
        assert built.spec.num_classes == typed.dataset.num_classes


def _overrides(cls: type, base: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(base, method)


@pytest.mark.parametrize("entry", [e for e in LAYERS if e.base_ref], ids=lambda e: e.group)
def test_every_implementation_honours_its_base_class(entry):
    base = entry.base
    declared = {
        name: type(value)
        for name, value in vars(base).items()
        if not name.startswith("_") and isinstance(value, bool | str | tuple)
    }
    for name in entry.registry.names():
        cls = entry.registry.get(name)
        assert inspect.isclass(cls) and issubclass(cls, base), f"{name} is not a {base.__name__}"
        for attr, kind in declared.items():
            value = getattr(cls, attr)
            assert isinstance(value, kind), f"{cls.__name__}.{attr} should be a {kind.__name__}"
        assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods"
        if entry.group == "algorithm":
            assert cls.name == name, f"{cls.__name__}.name={cls.name!r}, registered as {name!r}"
            if not cls.composite:
                assert _overrides(cls, base, "emit_conv2d") and _overrides(cls, base, "schedule")
        if entry.group == "tuning":
            assert _overrides(cls, base, "compile" if cls.uses_tvm else "wrap"), name
