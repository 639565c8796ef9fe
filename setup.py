"""The config groups live in the top-level conf/ (beside experiments/ and tests/) and install as
the package ``dlas.conf``, so ``pip install`` works outside the checkout too. pyproject.toml
holds everything else."""

from setuptools import find_namespace_packages, setup

# Namespace packages: hydra_plugins has no __init__.py (Hydra's plugin discovery convention).
PACKAGES = find_namespace_packages(include=["dlas", "dlas.*", "hydra_plugins", "hydra_plugins.*"])

# The config groups (conf/algorithm, ...) hold only YAML: data packages of dlas.conf.
CONF = ["dlas.conf", *(f"dlas.conf.{group}" for group in find_namespace_packages(where="conf"))]

setup(
    packages=[*PACKAGES, *CONF],
    package_dir={"dlas.conf": "conf"},
    package_data={package: ["*.yaml"] for package in CONF},
)
