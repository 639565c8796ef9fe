"""End to end: a real sweep (experiments/study_smoke.yaml: 3 runs) into a tmp MLflow store,
the report it writes at its end, that report opened in a real headless Chromium, and the
``python -m dlas.report`` command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlas.report.__main__ import main as report_main
from tests.report.browser import dump_dom
from tests.search.conftest import (  # noqa: F401  (fixtures)
    _clean_env,
    artifact_text,
    base_args,
    children_of,
    mlflow_runs,
    parents,
    run_dlas,
    shared_cache,
)


def _attr(dom: str, name: str) -> str | None:
    body = re.search(r"<body([^>]*)>", dom)
    found = re.search(rf'{name}="([^"]*)"', body.group(1)) if body else None
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study_smoke")
    cache = root / "cache"
    run_dlas(
        [
            "-m",
            "+experiment=study_smoke",
            *[
                a
                for a in base_args(root, cache)
                if a.split("=")[0]
                in ("paths.mlruns_dir", "paths.cache_dir", "hydra.sweep.dir", "hydra.run.dir")
            ],
        ]
    )
    return root


def test_sweep_ends_with_a_report_logged_to_its_parent(smoke_sweep: Path) -> None:
    runs = mlflow_runs(smoke_sweep)
    (parent,) = parents(runs)
    kids = children_of(runs, parent.info.run_id)
    assert len(kids) == 3 and all(r.info.status == "FINISHED" for r in kids)
    md = artifact_text(smoke_sweep, parent.info.run_id, "report/report.md")
    for key in ("| I |", "| X |", "| XIII |"):
        assert key in md
    assert "weight_pruning | sparse_gemm | untuned" in md
    # X is testable here (a pruned and a dense model, same tuning); the rest say what is missing
    assert re.search(r"\| X \| .* \| (holds|does not hold) \|", md)
    assert "needs a GPU device" in md
    for kid in kids:
        assert kid.info.run_id in md
    local = smoke_sweep / "multirun" / "report" / "index.html"
    assert local.exists()


def test_report_renders_in_a_real_browser_offline(smoke_sweep: Path) -> None:
    runs = mlflow_runs(smoke_sweep)
    (parent,) = parents(runs)
    html = artifact_text(smoke_sweep, parent.info.run_id, "report/index.html")
    assert "<script src" not in html and "<link" not in html  # nothing fetched
    page = smoke_sweep / "page.html"
    page.write_text(html)
    dom = dump_dom(page)
    assert _attr(dom, "data-script-error") is None
    assert _attr(dom, "data-rendered") == "ok", dom[:500]
    images = len(re.findall(r"<img ", html))
    assert images >= 3 and _attr(dom, "data-images") == str(images)
    assert int(_attr(dom, "data-tables") or 0) >= 2  # the verdict table and one model table
    assert "tiny_cnn · digits 16px on local_cpu" in dom


def test_optuna_study_plots_render_offline(smoke_sweep: Path) -> None:
    runs = mlflow_runs(smoke_sweep)
    (parent,) = parents(runs)
    page = smoke_sweep / "pareto.html"
    page.write_text(artifact_text(smoke_sweep, parent.info.run_id, "optuna/pareto_front.html"))
    dom = dump_dom(page)
    assert "main-svg" in dom  # plotly.js ran and drew the figure, with the network blocked


def test_command_line(smoke_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{smoke_sweep / 'mlruns' / 'mlflow.db'}"
    out = smoke_sweep / "cli"
    assert report_main(["study_smoke", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "XIII" in printed and "logged to run" in printed
    assert (out / "index.html").exists() and (out / "report.md").exists()

    (parent,) = parents(mlflow_runs(smoke_sweep))
    assert report_main([parent.info.run_id, "--tracking-uri", uri, "--out", str(out / "id")]) == 0
    assert (out / "id" / "report.md").read_text().count("| XIII |") == 1

    assert report_main(["no_such_study", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "'no_such_study'" in err and "study_smoke" in err  # lists the experiments there
    child = children_of(mlflow_runs(smoke_sweep), parent.info.run_id)[0].info.run_id
    assert report_main([child, "--tracking-uri", uri]) == 2
    assert f"its parent run is {parent.info.run_id}" in capsys.readouterr().err
