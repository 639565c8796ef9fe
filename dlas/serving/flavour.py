"""The ``dlas`` MLflow flavour: ``save_model`` lays out a TVM library as an MLflow model.

Layout of ``<model>/``::

    MLmodel                  python_function (loader dlas_tvm_pyfunc) + dlas flavours
    code/dlas_tvm_pyfunc.py  the loader (numpy + TVM only; see dlas.serving.tvm_pyfunc)
    data/model.so            the library built for the host
    data/input_spec.json     shape, dtype, layout, mean/std, classes, label names
    data/reference.npz       inputs and the logits the run computed from them
    requirements.txt ...     the environment (apache-tvm, numpy)

Used through ``mlflow.models.Model.log(name, flavor=dlas.serving.flavour, ...)``, which also
creates the MLflow 3 LoggedModel that ``runs:/<run id>/<name>`` resolves to.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from dlas.serving import tvm_pyfunc

FLAVOR_NAME = "dlas"
LOADER_MODULE = "dlas_tvm_pyfunc"
DATA = "data"
CODE = "code"
REFERENCE_FILE = "reference.npz"


def requirements() -> list[str]:
    """What loading the model needs: TVM's runtime and numpy, pinned to the logging versions."""
    out = []
    for pkg in ("apache-tvm", "numpy"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def save_model(
    path: str | Path,
    library: str | Path,
    input_spec: dict[str, Any],
    mlflow_model: Any = None,
    signature: Any = None,
    input_example: Any = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    from mlflow import pyfunc
    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _mlflow_conda_env,
        _PythonEnv,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / DATA).mkdir()
    (path / CODE).mkdir()
    shutil.copyfile(library, path / DATA / tvm_pyfunc.LIBRARY_FILE)
    (path / DATA / tvm_pyfunc.SPEC_FILE).write_text(json.dumps(input_spec, indent=1))
    shutil.copyfile(tvm_pyfunc.__file__, path / CODE / f"{LOADER_MODULE}.py")
    if reference is not None:
        np.savez(path / DATA / REFERENCE_FILE, inputs=reference[0], logits=reference[1])

    mlflow_model = mlflow_model or Model()
    if signature is not None:
        mlflow_model.signature = signature
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(path))
    if metadata:
        mlflow_model.metadata = metadata
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=LOADER_MODULE,
        data=DATA,
        code=CODE,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        library=f"{DATA}/{tvm_pyfunc.LIBRARY_FILE}",
        input_spec=f"{DATA}/{tvm_pyfunc.SPEC_FILE}",
        target=input_spec.get("target", ""),
    )
    mlflow_model.save(str(path / "MLmodel"))
    reqs = requirements()
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(reqs) + "\n")
    _PythonEnv.current().to_yaml(str(path / _PYTHON_ENV_FILE_NAME))
    _mlflow_conda_env(path=str(path / _CONDA_ENV_FILE_NAME), additional_pip_deps=reqs)
