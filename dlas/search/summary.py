"""What a sweep did, as a table: best per objective, skipped combinations, failures."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dlas.layers import MODEL_GROUPS as MODEL_LAYERS
from dlas.metrics import BASELINE_COMPRESSION as BASELINE_COMPRESSION
from dlas.metrics import LATENCY as LATENCY
from dlas.metrics import NOISY, DenseBaselines
from dlas.metrics import TOP1 as ACCURACY


@dataclass
class JobRecord:
    """One job of a sweep, as seen from Hydra (skipped jobs have no MLflow run)."""

    num: int
    overrides: list[str]
    status: str  # FINISHED | FAILED | SKIPPED
    reason: str = ""
    run_id: str | None = None
    choices: dict[str, str] = field(default_factory=dict)  # layer → option name
    metrics: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        return cls(**json.loads(text))

    def model_key(self) -> str:
        return model_key(self.choices, self.overrides)


def model_key(choices: dict[str, str], overrides: Sequence[str]) -> str:
    """Everything the trained model depends on among a job's choices and overrides: runs with
    the same key share one dense baseline."""
    picked = {k: v for k, v in choices.items() if k in MODEL_LAYERS}
    for override in overrides:
        key, _, value = override.partition("=")
        path = key.lstrip("+~")
        if "." in path and path.split(".")[0] in MODEL_LAYERS:
            picked[path] = value
    return json.dumps(picked, sort_keys=True)


def accuracy_drops(records: Sequence[JobRecord], accuracy: str = ACCURACY) -> dict[int, float]:
    """Accuracy drop vs the dense model per finished job, in points (see DenseBaselines)."""
    baselines = DenseBaselines()
    done = [r for r in records if r.status == "FINISHED"]
    for r in done:
        baselines.add(r.model_key(), r.choices.get("compression"), r.metrics.get(accuracy))
    drops = {r.num: baselines.drop(r.model_key(), r.metrics, accuracy) for r in done}
    return {num: drop for num, drop in drops.items() if drop is not None}


def _varying(records: Sequence[JobRecord]) -> dict[int, str]:
    """Each job's overrides minus those every job shares (the fixed part of the command)."""
    common = set.intersection(*(set(r.overrides) for r in records)) if records else set()
    return {
        r.num: " ".join(o for o in r.overrides if o not in common) or "(defaults)" for r in records
    }


def _noisy(record: JobRecord) -> bool:
    return record.metrics.get(NOISY, 0.0) > 0


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def summarize(
    records: Sequence[JobRecord],
    max_accuracy_drop: float | None = 1.0,
    latency: str = LATENCY,
    accuracy: str = ACCURACY,
) -> tuple[str, dict[str, float]]:
    """The summary table as text, and the sweep-level metrics for the parent run."""
    records = sorted(records, key=lambda r: r.num)
    names = _varying(records)
    drops = accuracy_drops(records, accuracy)
    done = [r for r in records if r.status == "FINISHED"]
    skipped = [r for r in records if r.status == "SKIPPED"]
    failed = [r for r in records if r.status == "FAILED"]
    lines = [
        f"dlas sweep: {len(records)} jobs - {len(done)} finished, {len(skipped)} skipped "
        f"(invalid combination), {len(failed)} failed"
    ]
    metrics = {
        "sweep/jobs": len(records),
        "sweep/finished": len(done),
        "sweep/skipped": len(skipped),
        "sweep/failed": len(failed),
    }

    def best(pool: list[JobRecord], key: str, sign: float, label: str, metric: str) -> None:
        pool = [r for r in pool if key in r.metrics]
        if not pool:
            return
        r = min(pool, key=lambda r: sign * r.metrics[key])
        metrics[metric] = r.metrics[key]
        flag = "  (noisy latency: see the run's latency.noisy tag)" if _noisy(r) else ""
        lines.append(f"  {label}: {r.metrics[key]:.4g}  job #{r.num} {names[r.num]}{flag}")

    lines.append("best:")
    best(done, latency, 1.0, f"lowest {latency}", "best/latency_ms")
    if max_accuracy_drop is not None:
        feasible = [r for r in done if r.num in drops and drops[r.num] <= max_accuracy_drop]
        best(
            feasible,
            latency,
            1.0,
            f"lowest {latency} with accuracy drop <= {max_accuracy_drop:g} pt",
            "best/feasible_latency_ms",
        )
    best(done, accuracy, -1.0, f"highest {accuracy}", "best/accuracy")

    lines.append(
        f"{'job':>4}  {'status':8}  {'latency_ms':>10}  {'top1':>6}  {'drop_pt':>7}  overrides"
    )
    for r in records:
        lines.append(
            f"{r.num:>4}  {r.status:8}  {_fmt(r.metrics.get(latency)):>9}{'*' if _noisy(r) else ' '}  "
            f"{_fmt(r.metrics.get(accuracy), digits=3):>6}  "
            f"{_fmt(drops.get(r.num), digits=3):>7}  {names[r.num]}"
        )
    noisy = [r for r in done if _noisy(r)]
    if noisy:
        lines.append(f"* noisy latency ({len(noisy)} jobs): wide interval or a loaded machine")
    metrics["sweep/noisy"] = len(noisy)
    for title, group in (("skipped (invalid combination)", skipped), ("failed", failed)):
        if group:
            lines.append(f"{title}:")
            lines.extend(f"  #{r.num} {names[r.num]}: {r.reason}" for r in group)
    return "\n".join(lines), metrics


def records_csv(records: Sequence[JobRecord], accuracy: str = ACCURACY) -> str:
    drops = accuracy_drops(records, accuracy)
    keys = sorted({k for r in records for k in r.metrics})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["job", "status", "reason", "mlflow_run_id", "overrides", "accuracy_drop_pt", *keys]
    )
    for r in sorted(records, key=lambda r: r.num):
        writer.writerow(
            [
                r.num,
                r.status,
                r.reason,
                r.run_id or "",
                " ".join(r.overrides),
                drops.get(r.num, ""),
                *(r.metrics.get(k, "") for k in keys),
            ]
        )
    return out.getvalue()


def job_result(job_return: Any) -> dict[str, Any]:
    """What dlas.run returned for a Hydra job; a job that raised (past run.py's sweep guard)
    becomes FAILED with its exception, read through Hydra's public ``return_value`` (which
    re-raises it). A dict returned by the job is handed back itself, not a copy."""
    try:
        value = job_return.return_value
    except Exception as exc:
        return {"status": "FAILED", "reason": f"{type(exc).__name__}: {exc}"}
    if not isinstance(value, dict):
        return {"status": "FAILED", "reason": f"the job returned {value!r}, not its metrics"}
    return value


def numeric_metrics(values: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
