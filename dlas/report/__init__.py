"""The study's answer: re-check the 13 observations of the DLAS study on a sweep's runs and
write a self-contained report (HTML + Markdown), logged to the sweep's parent MLflow run.

``python -m dlas.report <parent run id | study name | experiment name>``; sweeps and studies
call :func:`report_sweep` when they end.
"""

from dlas.report.build import Report, build, publish, report_sweep, report_target
from dlas.report.observations import OBSERVATIONS, Finding, Observation, Verdict, observation
from dlas.report.runs import ReportTargetError, find_source, load_table, make_table

__all__ = [
    "OBSERVATIONS",
    "Finding",
    "Observation",
    "Report",
    "ReportTargetError",
    "Verdict",
    "build",
    "find_source",
    "load_table",
    "make_table",
    "observation",
    "publish",
    "report_sweep",
    "report_target",
]
