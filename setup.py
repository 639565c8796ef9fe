"""The config groups live in the top-level conf/ (beside experiments/ and tests/) and install as
the package ``dlas.conf``, so ``pip install`` works outside the checkout too. pyproject.toml
holds everything else."""

from setuptools import find_namespace_packages, setup

# Namespace packages: hydra_plugins has no __init__.py (Hydra's plugin discovery convention).
PACKAGES = find_namespace_packages(include=["dlas", "dlas.*", "hydra_plugins", "hydra_plugins.*"])

setup(packages=[*PACKAGES, "dlas.conf"], package_dir={"dlas.conf": "conf"})
