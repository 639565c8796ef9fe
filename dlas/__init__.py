"""dlas: cross-stack deep-learning inference experiments (dataset → model → compression →
algorithm → tuning → device), composed with Hydra, compiled with TVM, logged to MLflow."""

# Before anything imports torchvision (dlas's models, TVM's frontend, torch-pruning): on CPU
# torch builds its C++ ops cannot load and the import would fail half-way.
from dlas import _torchvision  # noqa: F401

__version__ = "0.1.0"
