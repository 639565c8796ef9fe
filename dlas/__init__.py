"""dlas: cross-stack deep-learning inference experiments (dataset → model → compression →
algorithm → tuning → device), composed with Hydra, compiled with TVM, logged to MLflow."""

import gc as _gc

# Before anything imports torchvision (dlas's models, TVM's frontend, torch-pruning): on CPU
# torch builds its C++ ops cannot load and the import would fail half-way. With the collector
# paused: torch's import makes about 160,000 long-lived objects, and collecting
# while it does cost 0.2 s of every start (dlas.run pauses it for the rest of the stack too).
_collecting = _gc.isenabled()
_gc.disable()
try:
    from dlas import _torchvision  # noqa: F401
finally:
    if _collecting:
        _gc.enable()

__version__ = "0.1.0"
