"""The config groups live in the top-level conf/ (beside experiments/ and tests/) and install as
the package ``dlas.conf``, so ``pip install`` works outside the checkout too. pyproject.toml
holds everything else."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["dlas", "dlas.*", "hydra_plugins", "hydra_plugins.*"]), "dlas.conf"],
    package_dir={"dlas.conf": "conf"},
)
