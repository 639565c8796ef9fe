"""Runs → findings, tables, figures → ``index.html`` + ``report.md`` (+ figures, run table),
written to a folder and logged to the sweep's parent run under ``report/``."""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dlas.report.cells import cells
from dlas.report.observations import Finding, run_all
from dlas.report.plots import Figure, all_figures
from dlas.report.render import Context, failed_runs, to_html, to_markdown
from dlas.report.runs import Source, find_source, load_table
from dlas.report.tables import paper_tables

log = logging.getLogger(__name__)

ARTIFACT_DIR = "report"
UI_URL_ENV = "DLAS_MLFLOW_UI_URL"


@dataclass
class Report:
    source: Source
    table: pd.DataFrame
    findings: list[Finding]
    figures: list[Figure]
    html: str
    markdown: str

    def files(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {
            "index.html": self.html,
            "report.md": self.markdown,
            "runs.csv": self.table.to_csv(index=False),
        }
        for fig in self.figures:
            if fig.png is not None:
                out[f"figures/{fig.name}.png"] = fig.png
        return out


def ui_url(tracking_uri: str) -> str:
    """Base URL of the MLflow UI for run links: $DLAS_MLFLOW_UI_URL, else the tracking server
    itself, else where ``make ui`` serves it."""
    if os.environ.get(UI_URL_ENV):
        return os.environ[UI_URL_ENV]
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return "http://127.0.0.1:5000"


def build(source: Source, command: str = "", table: pd.DataFrame | None = None) -> Report:
    """The report of ``source``'s runs (or of ``table``, a run table made by hand)."""
    table = load_table(source) if table is None else table
    findings = run_all(table)
    c = cells(table)
    figures = all_figures(c, table)
    tags = source.parent.data.tags if source.parent is not None else {}
    status = table["status"].value_counts().to_dict() if len(table) else {}
    ctx = Context(
        title=f"dlas study report: {tags.get('mlflow.runName') or source.description}",
        source=source.description,
        tracking_uri=source.tracking_uri,
        ui_url=ui_url(source.tracking_uri),
        command=command or f"python -m dlas.report {source.parent_run_id or ''}".strip(),
        sweep_command=tags.get("dlas.sweep.command", ""),
        counts={"runs": len(table), **{str(k).lower(): int(v) for k, v in status.items()}},
        failed=failed_runs(table),
        experiment_of=dict(zip(table["run_id"], table["experiment_id"].astype(str), strict=True)),
    )
    tables = paper_tables(c)
    return Report(
        source,
        table,
        findings,
        figures,
        to_html(ctx, findings, tables, figures),
        to_markdown(ctx, findings, tables, figures),
    )


def write(report: Report, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in report.files().items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return out_dir / "index.html"


def publish(report: Report, out_dir: Path) -> Path:
    """Write the report to ``out_dir`` and log it to the parent run (if any) as ``report/``;
    returns the local index.html."""
    index = write(report, out_dir)
    src = report.source
    if src.parent_run_id and src.client is not None:
        src.client.log_artifacts(src.parent_run_id, str(out_dir), ARTIFACT_DIR)
    return index


def report_target(
    target: str, out_dir: Path | None, tracking_uri: str | None = None
) -> tuple[Report, Path]:
    source = find_source(target, tracking_uri)
    command = "python -m dlas.report " + shlex.quote(target)
    report = build(source, command)
    out = out_dir or Path("reports") / _slug(target)
    return report, publish(report, out)


def report_sweep(client: Any, parent_run_id: str, out_dir: Path | None = None) -> Path | None:
    """The report at the end of a sweep or study, written to ``out_dir`` (else only logged)
    and logged to the parent run. Never raises: a failure is a warning, the sweep stands."""
    try:
        report = build(find_source(parent_run_id, client=client))
        if out_dir is None:
            with tempfile.TemporaryDirectory(prefix="dlas-report-") as tmp:
                publish(report, Path(tmp))
            index = None
        else:
            index = publish(report, out_dir)
        counts: dict[str, int] = {}
        for f in report.findings:
            counts[f.verdict.value] = counts.get(f.verdict.value, 0) + 1
        log.info(
            "study report logged to run %s as %s/index.html%s; observations: %s",
            parent_run_id,
            ARTIFACT_DIR,
            f" (and written to {index})" if index else "",
            ", ".join(f"{n} {v}" for v, n in counts.items()),
        )
        return index
    except Exception as exc:  # noqa: BLE001 - the report must never fail the sweep
        log.warning("no study report for run %s: %s: %s", parent_run_id, type(exc).__name__, exc)
        return None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80]
