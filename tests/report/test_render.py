"""The report built from a hand-made study table: every figure drawn, tables with the best
cells marked, one section per observation, a user's own observation included; the HTML
rendered in a real headless Chromium with the network blocked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlas.report import OBSERVATIONS, Verdict, build, observation
from dlas.report.observations import base
from dlas.report.runs import Source
from tests.report.browser import dump_dom
from tests.report.conftest import run, table

ALGOS = ("direct", "gemm", "spatial_pack")


def study_table():
    """Two models x dense/weight_pruning/int8 x algorithms x untuned/tuned, one CPU."""
    rows = []
    for model, params, macs, acc in (("small", 1e6, 1e8, 0.9), ("big", 8e6, 6e8, 0.93)):
        for comp in ("dense", "weight_pruning", "int8"):
            algos = ALGOS + (("sparse_gemm",) if comp == "weight_pruning" else ())
            for i, algo in enumerate(algos):
                for tuning, gain in (("untuned", 1.0), ("metaschedule", 2.0 + i)):
                    rows.append(
                        run(
                            model=model,
                            compression=comp,
                            algorithm=algo,
                            tuning=tuning,
                            params=params,
                            macs=macs,
                            sparsity=0.7 if comp == "weight_pruning" else 0.0,
                            accuracy=acc - (0.02 if comp == "int8" else 0.0),
                            latency=macs
                            / 1e8
                            * (1 + 0.3 * i)
                            / gain
                            * (0.6 if comp == "int8" else 1),
                        )
                    )
    rows.append(run(model="small", compression="fp16", status="FAILED", latency=None, error="boom"))
    return table(*rows)


@pytest.fixture
def mine(monkeypatch: pytest.MonkeyPatch):
    """A user's observation, registered for this test only."""
    monkeypatch.setattr(OBSERVATIONS, "_entries", dict(OBSERVATIONS._entries))
    monkeypatch.setattr(base, "_ORDER", list(base._ORDER))

    @observation("int8-fastest", "int8 is the fastest compression.")
    def int8_fastest(t, obs):
        fastest = t.loc[t["latency_ms"].idxmin()]
        return obs.finding(
            Verdict.HOLDS if fastest["compression"] == "int8" else Verdict.FAILS,
            "compression of the fastest run",
            str(fastest["compression"]),
            "the fastest run's compression",
            run_ids=[fastest["run_id"]],
        )


def _report():
    source = Source("sqlite:///nowhere.db", "a hand-made table", None, ["1"])
    return build(source, "python -m dlas.report test", table=study_table())


def test_report_contents(mine) -> None:
    report = _report()
    keys = [f.key for f in report.findings]
    assert keys[:13] == [
        "I",
        "II",
        "III",
        "IV",
        "V",
        "VI",
        "VII",
        "VIII",
        "IX",
        "X",
        "XI",
        "XII",
        "XIII",
    ]
    assert keys[-1] == "int8-fastest" and report.findings[-1].verdict == Verdict.HOLDS
    assert all(f.png for f in report.figures), [f.caption for f in report.figures if not f.png]
    html, md = report.html, report.markdown
    assert html.count('class="obs"') == 14 and html.count("<img ") == 4
    assert "http://" not in re.sub(r'href="[^"]*"', "", html)  # only links point anywhere
    # Tuned spatial_pack-less gains: direct tuned is the fastest cell of each model.
    assert "small · digits 32px on local_cpu" in md and "big · digits 32px on local_cpu" in md
    row = next(
        line for line in md.splitlines() if line.startswith("| int8 | direct | metaschedule |")
    )
    assert row.count("**") >= 2  # the fastest cell is marked best in its column
    assert "## Failed runs" in md and "boom" in md
    files = report.files()
    assert {"index.html", "report.md", "runs.csv"} <= set(files)
    assert sum(name.startswith("figures/") for name in files) == 4


def test_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text(_report().html)
    dom = dump_dom(page)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="ok"' in body and 'data-images="4"' in body, body
    assert "data-script-error" not in body
    assert 'data-tables="3"' in body  # the verdict table and two model tables
