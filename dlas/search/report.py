"""Study artifacts for the parent MLflow run: all trials as CSV, the latency/accuracy Pareto front,
the optimisation history and parameter importances (plotly HTML), and the best trials as text."""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

import optuna
from optuna.trial import TrialState

from dlas.search.objectives import Objective

log = logging.getLogger(__name__)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        constraints = t.constraints
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": json.dumps(t.values) if t.values else "",
                "latency_ms": attrs.get("dlas.latency"),
                "accuracy": attrs.get("dlas.accuracy"),
                "accuracy_drop": attrs.get("dlas.accuracy_drop"),
                "feasible": all(v <= 0 for v in constraints.values()) if constraints else "",
                "config": " ".join(attrs.get("dlas.overrides", [])),
                "duplicate_of": attrs.get("dlas.duplicate_of", ""),
                "reason": attrs.get("dlas.reason", ""),
                "mlflow_run_id": attrs.get("mlflow_run_id", ""),
                "seconds": t.duration.total_seconds() if t.duration else "",
            }
        )
    return rows


def trials_csv(study: optuna.Study) -> str:
    rows = trial_rows(study)
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency and higher accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((lo <= lat and ao >= acc) and (lo < lat or ao > acc) for lo, ao in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _front_figure(rows: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    done = [
        r
        for r in rows
        if r["state"] == "COMPLETE"
        and r["latency_ms"] is not None
        and r["accuracy"] is not None
        and not r["duplicate_of"]
    ]
    points = [(r["latency_ms"], r["accuracy"]) for r in done]
    front = pareto_front(points)
    fig = go.Figure()
    for feasible, label in ((True, "feasible"), (False, "over the accuracy-drop limit")):
        pick = [r for r in done if (r["feasible"] is not False) == feasible]
        fig.add_trace(
            go.Scatter(
                x=[r["latency_ms"] for r in pick],
                y=[r["accuracy"] for r in pick],
                mode="markers",
                name=label,
                text=[f"#{r['number']} {r['config']}" for r in pick],
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[points[i][0] for i in front],
            y=[points[i][1] for i in front],
            mode="lines",
            name="Pareto front",
            line={"shape": "hv"},
        )
    )
    fig.update_layout(
        title="Latency / accuracy", xaxis_title="latency (ms)", yaxis_title="accuracy (top-1)"
    )
    return fig


def figures(study: optuna.Study, objective: Objective) -> dict[str, Any]:
    """Whichever plots this study can draw (a plot needing more trials is left out)."""
    from optuna import visualization as vis

    rows = trial_rows(study)
    target = (lambda t: t.values[0]) if len(objective.directions) > 1 else None
    makers = {
        "pareto_front": lambda: _front_figure(rows),
        "optimization_history": lambda: vis.plot_optimization_history(
            study, target=target, target_name=objective.latency
        ),
        "param_importances": lambda: vis.plot_param_importances(
            study, target=target, target_name=objective.latency
        ),
    }
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except Exception as exc:  # noqa: BLE001 - e.g. importances need >= 2 finished trials
            log.info("no %s plot: %s", name, exc)
    return out


def study_artifacts(study: optuna.Study, objective: Objective) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {"trials.csv": trials_csv(study)}
    try:
        figs = figures(study, objective)
    except ImportError:
        log.warning("plotly is not installed: no study plots (pip install plotly)")
        figs = {}
    for name, fig in figs.items():
        # plotly.js embedded (~4.8 MB a file): a CDN script is blank offline and in MLflow's
        # artifact viewer without network.
        files[f"{name}.html"] = fig.to_html(include_plotlyjs=True)
    return files


def best_text(study: optuna.Study, objective: Objective) -> str:
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not t.user_attrs.get("dlas.duplicate_of")
    ]
    lines = [
        f"study {study.study_name}: {len(study.trials)} trials, {len(done)} distinct "
        f"configurations finished"
    ]
    feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
    if len(objective.directions) == 1:
        if feasible:
            best = min(feasible, key=lambda t: t.values[0])
            lines.append(
                f"best feasible {objective.latency}: {best.values[0]:.4g} "
                f"(trial {best.number}: {' '.join(best.user_attrs['dlas.overrides'])})"
            )
        else:
            lines.append("no feasible trial yet")
    else:
        rows = [(t.values[0], t.values[1], t) for t in done]
        for i in pareto_front([(a, b) for a, b, _ in rows]):
            lat, acc, t = rows[i]
            lines.append(
                f"  Pareto: {lat:.4g} ms, accuracy {acc:.4f}  "
                f"(trial {t.number}: {' '.join(t.user_attrs['dlas.overrides'])})"
            )
    return "\n".join(lines)
