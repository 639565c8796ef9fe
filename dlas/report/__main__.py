"""``python -m dlas.report <parent run id | Optuna study name | experiment name> [--out DIR]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dlas.report.build import ARTIFACT_DIR, report_target
from dlas.report.runs import ReportTargetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlas.report",
        description="Re-check the DLAS study's 13 observations on a sweep's MLflow runs and "
        "write an offline HTML + Markdown report.",
    )
    parser.add_argument("target", help="parent run id, Optuna study name or experiment name")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<target>)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report, index = report_target(args.target, args.out, args.tracking_uri)
    except ReportTargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in report.findings:
        print(f"{f.key:>5}  {f.verdict.value:<14} {f.headline}")
    print(f"report: {index}")
    if report.source.parent_run_id:
        print(f"logged to run {report.source.parent_run_id} as {ARTIFACT_DIR}/index.html")
    else:
        print(f"{report.source.description} has no parent run: written locally only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
