"""What the command line says before Hydra composes anything: dlas's own ``--help`` (the six
layers, their options and the experiments) and hints for option names that are not config
files but are known to dlas (``model=<torchvision classifier>``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import resources

from omegaconf import OmegaConf

from dlas.layers import LAYERS

USAGE = """\
dlas: the Deep Learning Acceleration Stack. One run takes one option per layer, trains (or loads)
the model, compresses it, compiles it with TVM, measures latency and accuracy on the device, and
records everything in MLflow.

  python -m dlas.run [GROUP=OPTION ...] [KEY=VALUE ...]    one run
  python -m dlas.run -m GROUP=A,B [GROUP=C,D ...]          a sweep: one run per combination
  python -m dlas.run -m +experiment=NAME                   a prepared sweep (experiments/)
  python -m dlas.run --cfg job [overrides]                 the composed config, without running
  python -m dlas.report RUN_ID|STUDY|EXPERIMENT            the study report of a sweep
"""

FOOTER = """\
Any field of a group is an override too (device.timed_runs=50, dataset.test_limit=200); a field
a schema lacks is refused with the allowed names. Hydra's own flags: --hydra-help.
Docs: README.md, docs/architecture.md; `make ui` opens the MLflow UI.
"""


def options(group: str) -> list[str]:
    """The group's options: one YAML file each in the installed config package."""
    folder = resources.files("dlas.conf") / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def defaults() -> dict[str, str]:
    """group -> option of the default run (conf/config.yaml's defaults list)."""
    text = (resources.files("dlas.conf") / "config.yaml").read_text()
    picked: dict[str, str] = {}
    for entry in OmegaConf.create(text).defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            picked.update({str(k): str(v) for k, v in entry.items()})
    return picked


def experiments() -> list[str]:
    from hydra_plugins.dlas_sweeper.experiments import experiments_dir

    folder = experiments_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def help_text() -> str:
    picked = defaults()
    lines = [USAGE, "Layers, each a config group (GROUP=OPTION; * marks the default):"]
    for layer in LAYERS:
        names = [f"{n}*" if n == picked.get(layer.group) else n for n in options(layer.group)]
        lines.append(f"{layer.group}: {', '.join(names)}    ({layer.title} layer)")
    found = experiments()
    lines.append("")
    lines.append(f"experiment (+experiment=NAME): {', '.join(found) if found else '(none found)'}")
    lines += ["", FOOTER]
    return "\n".join(lines)


def option_hint(argv: Sequence[str]) -> str | None:
    """A message for ``model=<name>`` where <name> is a torchvision classifier rather than a
    config file (the study's command style), else None (Hydra reports other unknown options)."""
    for arg in argv:
        group, sep, value = arg.partition("=")
        if sep and group == "model" and value and value not in options("model"):
            from dlas.models.registry import torchvision_names

            if value in torchvision_names():
                return (
                    f"model={value} is not a dlas model option; a torchvision classifier is "
                    f"chosen by name: model=torchvision model.name={value} "
                    f"(dlas's models: {', '.join(options('model'))})"
                )
    return None


def preflight(argv: Sequence[str]) -> None:
    """Answer --help, or refuse a known misspelling, before Hydra runs (exits if it did)."""
    if "--help" in argv or "-h" in argv:
        print(help_text())
        sys.exit(0)
    if hint := option_hint(argv):
        print(f"error: {hint}", file=sys.stderr)
        sys.exit(2)
