"""The report as one self-contained HTML page (figures as base64 PNG, no external script or
style) and as Markdown (figures as PNG files beside it)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

from dlas.report.observations import Finding, Verdict
from dlas.report.plots import Figure
from dlas.report.tables import COLUMNS, Table

VERDICT_CLASS = {Verdict.HOLDS: "holds", Verdict.FAILS: "fails", Verdict.UNTESTABLE: "untestable"}

# Sets data-rendered="ok" on <body> once every image decoded (read by the browser test; the
# page needs no script to display).
CHECK_SCRIPT = """
window.addEventListener('error', function (e) {
  document.body.setAttribute('data-script-error', String(e.message));
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-tables', String(document.querySelectorAll('table').length));
  document.body.setAttribute('data-rendered', ok ? 'ok' : 'broken');
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.k { text-align: left; }
td.best { font-weight: bold; background: #e7f5e7; }
.holds { color: #176317; font-weight: bold; } .fails { color: #a11; font-weight: bold; }
.untestable { color: #777; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .small { font-size: 0.85em; color: #555; }
section.obs { border-left: 4px solid #ddd; padding-left: 1em; margin-bottom: 1.2em; }
code { background: #f6f6f6; padding: 0 3px; }
"""


@dataclass
class Context:
    """What the page says about where its runs came from."""

    title: str
    source: str
    tracking_uri: str
    ui_url: str  # MLflow UI base URL for run links ("" = relative)
    command: str  # how to regenerate this report
    sweep_command: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # run id, name, error
    experiment_of: dict[str, str] = field(default_factory=dict)  # run id → experiment id

    def run_url(self, run_id: str) -> str:
        exp = self.experiment_of.get(run_id, "0")
        return f"{self.ui_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def _e(text: object) -> str:
    return html.escape(str(text))


def _link(ctx: Context, run_id: str, text: str) -> str:
    return f'<a href="{_e(ctx.run_url(run_id))}">{_e(text)}</a>'


def _html_table(ctx: Context, t: Table) -> str:
    head = "".join(f"<th>{_e(c.title)}</th>" for c in COLUMNS)
    rows = []
    for i, (comp, algo, tuning) in enumerate(t.keys):
        tds = "".join(
            f'<td class="best">{_e(t.cell(i, j))} ★</td>'
            if i in t.best[j]
            else f"<td>{_e(t.cell(i, j))}</td>"
            for j in range(len(COLUMNS))
        )
        rows.append(
            f'<tr><td class="k">{_e(comp)}</td><td class="k">{_e(algo)}</td>'
            f'<td class="k">{_e(tuning)}</td>{tds}<td>{_link(ctx, t.run_ids[i], "run")}</td></tr>'
        )
    return (
        f"<h3>{_e(t.title)}</h3><table><tr><th>compression</th><th>algorithm</th>"
        f"<th>tuning</th>{head}<th>MLflow</th></tr>{''.join(rows)}</table>"
    )


def _html_finding(ctx: Context, f: Finding) -> str:
    links = ", ".join(_link(ctx, rid, rid[:8]) for rid in f.run_ids[:60])
    more = f" and {len(f.run_ids) - 60} more" if len(f.run_ids) > 60 else ""
    missing = f"<p><b>Missing:</b> {_e('; '.join(f.missing))}</p>" if f.missing else ""
    return (
        f'<section class="obs" id="obs-{_e(f.key)}"><h3>{_e(f.key)}. {_e(f.claim)}</h3>'
        f'<p>Verdict: <span class="{VERDICT_CLASS[f.verdict]}">{_e(f.verdict.value)}</span>'
        f" — {_e(f.headline)}</p><p>{_e(f.sentence)}</p>"
        f'<p class="small"><b>Test:</b> {_e(f.test)}</p>{missing}'
        f'<p class="small"><b>Runs ({len(f.run_ids)}):</b> {links or "none"}{more}</p></section>'
    )


def _html_figure(fig: Figure) -> str:
    if fig.png is None:
        return f"<h3>{_e(fig.title)}</h3><p class='small'>Not drawn: {_e(fig.caption)}</p>"
    data = base64.b64encode(fig.png).decode()
    return (
        f'<h3>{_e(fig.title)}</h3><figure><img alt="{_e(fig.title)}" id="fig-{fig.name}" '
        f'src="data:image/png;base64,{data}"><figcaption>{_e(fig.caption)}</figcaption></figure>'
    )


def verdict_rows(findings: list[Finding]) -> list[tuple[str, str, str, str]]:
    return [(f.key, f.claim, f.verdict.value, f.headline) for f in findings]


def to_html(
    ctx: Context, findings: list[Finding], tables: list[Table], figures: list[Figure]
) -> str:
    summary = "".join(
        f'<tr><td class="k"><a href="#obs-{_e(k)}">{_e(k)}</a></td><td class="k">{_e(claim)}</td>'
        f'<td class="k {VERDICT_CLASS[Verdict(v)]}">{_e(v)}</td><td class="k">{_e(h)}</td></tr>'
        for k, claim, v, h in verdict_rows(findings)
    )
    failed = "".join(
        f"<li>{_link(ctx, rid, name)}: {_e(err)}</li>" for rid, name, err in ctx.failed
    )
    counts = ", ".join(f"{n} {k}" for k, n in ctx.counts.items())
    body = [
        f"<h1>{_e(ctx.title)}</h1>",
        f"<p>Runs of {_e(ctx.source)} in <code>{_e(ctx.tracking_uri)}</code>: {_e(counts)}.</p>",
        f"<p class='small'>Sweep: <code>{_e(ctx.sweep_command)}</code></p>"
        if ctx.sweep_command
        else "",
        f"<p class='small'>Regenerate: <code>{_e(ctx.command)}</code></p>",
        "<h2>The observations</h2><table><tr><th>#</th><th>claim</th><th>verdict</th>"
        f"<th>key number</th></tr>{summary}</table>",
        "<h2>Figures</h2>",
        *(_html_figure(f) for f in figures),
        "<h2>Results per model</h2>",
        "<p class='small'>One row per cell (the fastest run of each compression × algorithm × "
        "tuning); speedup vs the model's dense / direct / untuned cell; MACs, parameters and "
        "size are effective (non-zero weights, stored data type); ★ marks each column's "
        "best.</p>",
        *(_html_table(ctx, t) for t in tables),
        "<h2>Observations in detail</h2>",
        *(_html_finding(ctx, f) for f in findings),
    ]
    if failed:
        body.append(f"<h2>Failed runs</h2><ul>{failed}</ul>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{_e(ctx.title)}</title><style>{STYLE}</style><script>{CHECK_SCRIPT}</script>"
        f"</head><body>{''.join(body)}</body></html>"
    )


def _md_escape(text: object) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(
    ctx: Context, findings: list[Finding], tables: list[Table], figures: list[Figure]
) -> str:
    lines = [
        f"# {ctx.title}",
        "",
        f"Runs of {ctx.source} in `{ctx.tracking_uri}`: "
        + ", ".join(f"{n} {k}" for k, n in ctx.counts.items())
        + ".",
        "",
    ]
    if ctx.sweep_command:
        lines += [f"Sweep: `{ctx.sweep_command}`", ""]
    lines += [f"Regenerate: `{ctx.command}`", "", "## The observations", ""]
    lines += ["| # | claim | verdict | key number |", "|---|---|---|---|"]
    lines += [
        f"| {k} | {_md_escape(c)} | {v} | {_md_escape(h)} |"
        for k, c, v, h in verdict_rows(findings)
    ]
    lines += ["", "## Figures", ""]
    for fig in figures:
        if fig.png is None:
            lines += [f"**{fig.title}**: not drawn ({fig.caption})", ""]
        else:
            lines += [f"![{fig.title}](figures/{fig.name}.png)", "", fig.caption, ""]
    lines += ["## Results per model", "", "Best value per column in **bold**.", ""]
    for t in tables:
        lines += [f"### {t.title}", ""]
        lines.append(
            "| compression | algorithm | tuning | "
            + " | ".join(c.title for c in COLUMNS)
            + " | run |"
        )
        lines.append("|---" * (len(COLUMNS) + 4) + "|")
        for i, (comp, algo, tuning) in enumerate(t.keys):
            vals = [
                f"**{t.cell(i, j)}**" if i in t.best[j] else t.cell(i, j)
                for j in range(len(COLUMNS))
            ]
            lines.append(
                f"| {comp} | {algo} | {tuning} | "
                + " | ".join(vals)
                + f" | [{t.run_ids[i][:8]}]({ctx.run_url(t.run_ids[i])}) |"
            )
        lines.append("")
    lines += ["## Observations in detail", ""]
    for f in findings:
        lines += [
            f"### {f.key}. {f.claim}",
            "",
            f"**Verdict: {f.verdict.value}** — {f.headline}",
            "",
            f.sentence,
            "",
            f"*Test:* {f.test}",
            "",
        ]
        if f.missing:
            lines += [f"*Missing:* {'; '.join(f.missing)}", ""]
        lines += [f"*Runs ({len(f.run_ids)}):* " + ", ".join(f.run_ids), ""]
    if ctx.failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {name} (`{rid}`): {err}" for rid, name, err in ctx.failed]
    return "\n".join(lines) + "\n"


def failed_runs(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    bad = table[table["status"] != "FINISHED"]
    return [(r.run_id, r.run_name or r.run_id, r.error or r.status) for r in bad.itertuples()]
