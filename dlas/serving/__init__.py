"""Serving layer: the run's program as an MLflow model, and the best one registered.

``log_model`` (one call per run) and ``register_best`` (one call per sweep or study) are the
two entry points; the flavour itself lives in :mod:`dlas.serving.flavour` and its loader in
:mod:`dlas.serving.tvm_pyfunc`.
"""

from dlas.serving.log import MODEL_NAME, log_model

__all__ = ["MODEL_NAME", "log_model"]
