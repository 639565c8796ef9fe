"""The 13 observations of the DLAS study, each a registered check of the run table.

Importing this package registers them in study order; a user's own observation registers the
same way (``@observation(key, claim)``, see docs/report.md).
"""

from dlas.report.observations import algorithms as _algorithms  # noqa: F401  (VII, VIII, IX)
from dlas.report.observations import compression as _compression  # noqa: F401  (II, IV, V, X)
from dlas.report.observations import devices as _devices  # noqa: F401  (XIII)

# Registration order is the report's order: the study's numbering I..XIII.
from dlas.report.observations import models as _models  # noqa: F401  (I, III, VI)
from dlas.report.observations import tuning as _tuning  # noqa: F401  (XI, XII)
from dlas.report.observations.base import (
    OBSERVATIONS,
    Finding,
    Observation,
    Verdict,
    observation,
    ordered,
    run_all,
)

STUDY_ORDER = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII"]

__all__ = [
    "OBSERVATIONS",
    "STUDY_ORDER",
    "Finding",
    "Observation",
    "Verdict",
    "observation",
    "ordered",
    "run_all",
]
