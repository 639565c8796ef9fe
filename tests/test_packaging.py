"""The wheel users install outside the checkout: every config group's YAML is inside it, as
``dlas.conf`` (Hydra's ``pkg://dlas.conf``), and building it raises no packaging warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_config_and_builds_without_warnings(tmp_path):
    # A copy of the sources: setuptools writes its build/ folder beside them.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("dlas", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The environment's setuptools, offline (no build isolation: nothing is downloaded).
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
        + ["-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BuildBackendWarning" not in out.stdout + out.stderr
    (wheel,) = tmp_path.glob("dlas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"dlas/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert len(configs) > 40 and configs <= names, sorted(configs - names)
    assert "dlas/run.py" in names and "hydra_plugins/dlas_sweeper/__init__.py" in names
