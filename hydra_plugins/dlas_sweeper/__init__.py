"""dlas's Hydra plugins: the ``dlas_optuna`` sweeper and the ``experiment`` config group read
from the project's ``experiments/`` folder. Hydra imports these modules on every start, so they
import nothing heavy at module level."""
