"""``llem report``: one self-contained HTML file per results directory, readable offline.

    from llenergymeasure import report
    report("results/my-study_20261123-213000")          # -> .../report.html

The page embeds plotly.js once in ``<head>`` (no CDN, no network: it opens from a USB
stick) and holds, for whatever results are under the path (one experiment, a study, several
studies, from one machine or several):

* a summary table per configuration (means and CIs over cycles, energy basis, flags, the
  best configuration and Pareto membership);
* J per output token per configuration with its CI;
* energy vs latency (TTFT, ITL) and energy vs throughput, with the Pareto front marked;
* the power / temperature / SM-clock timeline of any experiment (a drop-down) from its
  ``timeseries.parquet``;
* prefill vs decode energy where a result has a phase attribution;
* the environment(s), every quality flag, failures and skipped grid points.

Every energy figure names its basis (J/token basis, meter, method, scope) and says ESTIMATE
when any part is modelled; where the results shown together were measured differently
(machine, backend, meter, basis, timing) a banner says so. The page declares how many charts
it holds (``<meta name="llem-chart-count">``) so a browser test can check that all rendered.
Statistics are recomputed from the saved per-cycle values with the same seeded bootstrap as
the study summary (``study.summary``), so numbers agree with ``llem results``.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure._version import __version__
from llenergymeasure.domain.stats import CycleSummary
from llenergymeasure.domain.study import STUDY_METRICS
from llenergymeasure.exceptions import ExtraNotInstalledError
from llenergymeasure.reporting.collect import Collection, SavedRun, StudyInfo, collect, distinct
from llenergymeasure.reporting.frame import REPORT_EXTRA
from llenergymeasure.reporting.methods import energy_basis, is_estimate, method_differences
from llenergymeasure.reporting.pareto import pareto_front
from llenergymeasure.reporting.phases import NOT_MEASURED as PHASES_NOT_MEASURED
from llenergymeasure.reporting.phases import PhaseEnergy, phase_energy, phases_not_measured
from llenergymeasure.reporting.phases import method_text as phase_method_text
from llenergymeasure.results.filenames import TIMESERIES_FILENAME
from llenergymeasure.results.persistence import atomic_write_text
from llenergymeasure.study.stats import summarise_cycles
from llenergymeasure.study.summary import CI_SEED, CONFIDENCE, N_RESAMPLES

if TYPE_CHECKING:
    from llenergymeasure.progress import Progress

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.html"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
#: points kept per timeline series (per experiment and device) after downsampling
TIMELINE_POINTS = 1500
TIMELINE_POINTS_TOTAL = 150_000
TIMELINE_FIELDS = (
    ("power_w", "power (W)"),
    ("temperature_c", "temperature (°C)"),
    ("sm_clock_mhz", "SM clock (MHz)"),
)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


# ---- entry points --------------------------------------------------------------------------


def report(path: Path | str, out: Path | str | None = None, *, title: str | None = None) -> Path:
    """Write the HTML report of every result under ``path``; returns the file written.

    ``out`` defaults to ``<path>/report.html`` (next to the file when ``path`` is a
    ``result.json``). Needs plotly (the ``report`` extra); raises ``ResultsError`` when
    ``path`` holds no readable result.
    """
    collection = collect(path)
    text = render_html(collection, title=title)
    target = Path(out) if out is not None else default_report_path(collection.root)
    return atomic_write_text(target, text)


def default_report_path(root: Path) -> Path:
    """``<root>/report.html``, or beside ``root`` when it is a file."""
    return (root.parent if root.is_file() else root) / REPORT_FILENAME


def write_study_report(study_dir: Path, progress: Progress | None = None) -> Path | None:
    """The end-of-study report: ``report.html`` in the study directory, or None.

    Never raises: without the ``report`` extra it says (once, through ``progress``) how to
    get one; any other problem is logged and reported the same way. A study never fails
    over its report.
    """
    say = progress.message if progress is not None else logger.info
    try:
        path = report(study_dir)
    except ExtraNotInstalledError:
        say(
            f"no report.html: the report needs plotly -> {REPORT_EXTRA}, then `llem report {study_dir}`"
        )
        return None
    except Exception as e:  # the measurement is saved; the report is a convenience
        logger.debug("report failed", exc_info=True)
        say(f"no report.html ({type(e).__name__}: {e}); try `llem report {study_dir}` -v")
        return None
    say(f"report: {path}")
    return path


def _plotly() -> tuple[Any, Any, Callable[[], str]]:
    """(graph_objects, make_subplots, get_plotlyjs), or ExtraNotInstalledError."""
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
        from plotly.subplots import make_subplots
    except ImportError as e:
        raise ExtraNotInstalledError(
            f"llem report needs plotly, which is not installed -> {REPORT_EXTRA}"
        ) from e
    return go, make_subplots, get_plotlyjs


# ---- configurations ------------------------------------------------------------------------


@dataclass(eq=False)
class ConfigGroup:
    """One configuration (config hash) of one study, or of the standalone runs."""

    label: str
    config_hash: str
    study: StudyInfo | None
    runs: list[SavedRun]
    stats: dict[str, CycleSummary | None] = field(default_factory=dict)
    best: bool = False
    cycles_planned: int | None = None

    @property
    def completed(self) -> list[SavedRun]:
        """Runs that finished their measurement."""
        return [r for r in self.runs if r.completed]

    @property
    def bases(self) -> list[str]:
        """Distinct energy bases of the completed runs."""
        return distinct([energy_basis(r.result) for r in self.completed]) or ["not measured"]

    @property
    def basis(self) -> str:
        """The energy basis, or all of them joined by `` | `` when the cycles differ."""
        return " | ".join(self.bases)

    @property
    def estimate(self) -> bool:
        """Whether any cycle's energy is an estimate."""
        return any(is_estimate(r.result) for r in self.completed)


def config_groups(collection: Collection) -> list[ConfigGroup]:
    """Configurations in study-summary order (then first seen), with their statistics."""
    groups: dict[tuple[int, str], ConfigGroup] = {}
    for run in collection.runs:
        key = (id(run.study), run.result.config_hash)
        if key not in groups:
            groups[key] = ConfigGroup(run.config_label, run.result.config_hash, run.study, [])
        groups[key].runs.append(run)
    several = len({id(r.study) for r in collection.runs}) > 1
    out = []
    for group in groups.values():
        summary = group.study.summary if group.study else None
        config = next(
            (c for c in summary.configs if c.config_hash == group.config_hash), None
        ) if summary else None  # fmt: skip
        if config is not None:
            group.best, group.cycles_planned = config.best, config.cycles_planned
        if several:
            group.label = f"{_study_tag(group.study, collection)}: {group.label}"
        group.stats = {m: _summarise(group.completed, m) for m in STUDY_METRICS}
        out.append(group)
    order = {id(s): i for i, s in enumerate(collection.studies)}

    def position(g: ConfigGroup) -> tuple[int, int]:
        summary = g.study.summary if g.study else None
        hashes = [c.config_hash for c in summary.configs] if summary else []
        index = hashes.index(g.config_hash) if g.config_hash in hashes else len(hashes)
        return (order.get(id(g.study), len(order)), index)

    return sorted(out, key=position)


def _study_tag(study: StudyInfo | None, collection: Collection) -> str:
    """The study's name, or its directory name when two studies here share the name."""
    if study is None:
        return "experiments"
    same = sum(s.name == study.name for s in collection.studies)
    return study.study_dir.name if same > 1 else study.name


def _summarise(runs: Sequence[SavedRun], metric: str) -> CycleSummary | None:
    """Mean and CI over cycles, exactly as the study summary computes them."""
    values = [getattr(r.result, metric) for r in runs]
    return summarise_cycles(values, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=CI_SEED)


# ---- the page ------------------------------------------------------------------------------


@dataclass
class Page:
    """Sections of the page, and the charts they hold (for the declared chart count)."""

    sections: list[str] = field(default_factory=list)
    n_charts: int = 0


def render_html(collection: Collection, *, title: str | None = None) -> str:
    """The whole report page as a string (plotly.js inlined)."""
    go, make_subplots, get_plotlyjs = _plotly()
    groups = config_groups(collection)
    page = Page()
    charts = _Charts(go, make_subplots, page)
    heading = title or _default_title(collection)
    page.sections.append(_header(collection, groups, heading))
    page.sections.append(_banners(collection, groups))
    page.sections.append(_summary_table(groups))
    charts.j_per_token(groups)
    charts.scatter(groups, "ttft_ms_mean", "TTFT, mean (ms)", "energy-ttft", "Energy vs TTFT")
    charts.scatter(groups, "itl_ms_mean", "ITL, mean (ms)", "energy-itl", "Energy vs ITL")
    charts.scatter(
        groups,
        "output_tokens_per_s",
        "throughput (output tokens/s)",
        "energy-throughput",
        "Energy vs throughput",
        maximise_x=True,
    )
    charts.phases(groups)
    charts.timeline(collection.runs)
    page.sections.append(_environment(collection.runs))
    page.sections.append(_quality(collection, groups))
    return _document(heading, page, get_plotlyjs())


def _default_title(collection: Collection) -> str:
    if len(collection.studies) == 1 and not collection.standalone():
        return f"llem report: study {collection.studies[0].name}"
    if not collection.studies and len(collection.runs) == 1:
        return f"llem report: experiment {collection.runs[0].result.name}"
    return f"llem report: {collection.root.resolve().name}"


def _document(heading: str, page: Page, plotly_js: str) -> str:
    body = "\n".join(s for s in page.sections if s)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="llenergymeasure {_e(__version__)}">
<meta name="llem-chart-count" content="{page.n_charts}">
<title>{_e(heading)}</title>
<style>{_CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{plotly_js}</script>
</head>
<body>
{body}
</body>
</html>
"""


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif;
       margin: 1.5rem auto; max-width: 1250px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
.meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ci { color: #666; font-size: .8em; white-space: nowrap; }
.banner { padding: .6rem .8rem; margin: .6rem 0; border-radius: 4px; }
.banner.method { background: #fdecea; border: 1px solid #e57373; }
.banner.estimate { background: #fff4e5; border: 1px solid #ffb74d; }
.banner.stack { background: #eef5fd; border: 1px solid #90caf9; }
.basis { font-size: .85rem; color: #333; margin: .2rem 0 .8rem; }
.basis.estimate { color: #b71c1c; font-weight: bold; }
.chart { border: 1px solid #e3e3e3; padding: .4rem; margin: .8rem 0; }
.note { color: #555; font-style: italic; }
.sev-critical { color: #b71c1c; font-weight: bold; } .sev-warning { color: #e65100; }
details { margin: .4rem 0; } summary { cursor: pointer; }
"""


def _e(value: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    """``digits`` significant figures; ``-`` for None."""
    if x is None or not math.isfinite(x):
        return "-"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:,.0f}"


def _header(collection: Collection, groups: list[ConfigGroup], heading: str) -> str:
    runs = collection.runs
    done = sum(r.completed for r in runs)
    studies = ", ".join(f"{s.name} ({s.study_dir.name})" for s in collection.studies) or "none"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    problems = "".join(f"<li>{_e(p)}</li>" for p in collection.problems)
    skipped = f"<p>Files skipped:</p><ul>{problems}</ul>" if problems else ""
    return (
        f"<h1>{_e(heading)}</h1>"
        f'<p class="meta">{len(runs)} experiment result(s) ({done} completed, '
        f"{len(runs) - done} failed) in {len(groups)} configuration(s); studies: {_e(studies)}"
        f"<br>source: {_e(collection.root.resolve())}<br>written {when} by llenergymeasure "
        f"{_e(__version__)}. Open offline: everything is in this file.</p>{skipped}"
    )


def _banners(collection: Collection, groups: list[ConfigGroup]) -> str:
    """Call out mixed methods, estimates and differing software stacks."""
    done = [r.result for r in collection.runs if r.completed]
    diffs = method_differences(done)
    out = []
    method = [d for d in diffs if d.changes_meaning]
    if method:
        items = "".join(f"<li>{_e(d.text())}</li>" for d in method)
        out.append(
            '<div class="banner method"><b>These results were not measured the same way.</b> '
            "Figures below put them side by side; each point's hover and legend name its "
            f"energy basis. Compare like with like.<ul>{items}</ul></div>"
        )
    estimates = [g.label for g in groups if g.estimate]
    if estimates:
        out.append(
            '<div class="banner estimate"><b>Energy of '
            f"{len(estimates)} configuration(s) is an ESTIMATE, not a measurement</b> "
            "(e.g. CPU TDP x utilisation, no hardware counter): "
            f"{_e(', '.join(estimates))}.</div>"
        )
    stack = [d for d in diffs if not d.changes_meaning]
    if stack:
        items = "".join(f"<li>{_e(d.text())}</li>" for d in stack)
        out.append(f'<div class="banner stack">Software stack differs:<ul>{items}</ul></div>')
    return "\n".join(out)


_TABLE_METRICS = (
    ("energy_j", "energy (J)"),
    ("j_per_output_token", "J / output token"),
    ("output_tokens_per_s", "output tok/s"),
    ("ttft_ms_mean", "TTFT mean (ms)"),
    ("itl_ms_mean", "ITL mean (ms)"),
)


def _summary_table(groups: list[ConfigGroup]) -> str:
    fronts = _front_membership(groups)
    pct = round(CONFIDENCE * 100)
    head = "".join(f"<th>{_e(h)}</th>" for _, h in _TABLE_METRICS)
    rows = []
    for g in groups:
        cells = "".join(_stat_cell(g.stats.get(m)) for m, _ in _TABLE_METRICS)
        planned = g.cycles_planned if g.cycles_planned is not None else len(g.runs)
        flags = [w for r in g.runs for w in r.result.warnings]
        critical = sum(w.severity == "critical" for w in flags)
        flag_text = f"{len(flags)}" + (
            f' (<span class="sev-critical">{critical} critical</span>)' if critical else ""
        )
        basis_cls = ' class="basis estimate"' if g.estimate else ""
        rows.append(
            f"<tr><td>{'&#9733; ' if g.best else ''}{_e(g.label)}<br>"
            f'<span class="ci">{_e(g.config_hash[:8])}{_key_text(g)}</span></td>'
            f'<td class="num">{len(g.completed)}/{planned}</td>{cells}'
            f"<td{basis_cls}>{_e(g.basis)}</td><td>{_e(', '.join(fronts.get(id(g), [])) or '-')}</td>"
            f'<td class="num">{flag_text}</td></tr>'
        )
    best = next((g for g in groups if g.best), None)
    best_note = (
        f"<p>&#9733; best: {_e(best.label)}; criterion: "
        f"{_e(best.study.summary.best_criterion if best.study and best.study.summary else '')}</p>"
        if best
        else ""
    )
    return (
        "<h2>Summary</h2>"
        f'<p class="meta">Mean over completed cycles, {pct}% percentile-bootstrap CI of the '
        "mean below it (seeded; with fewer than 5 cycles such a CI is too narrow). "
        "&quot;-&quot; = not measured.</p>"
        f"<table><tr><th>configuration</th><th>cycles</th>{head}<th>energy basis</th>"
        f"<th>on Pareto front</th><th>flags</th></tr>{''.join(rows)}</table>{best_note}"
    )


def _key_text(g: ConfigGroup) -> str:
    runs = g.runs
    if not runs or g.study is None:
        return ""
    swept = g.study.swept_fields
    fields = runs[0].key_fields
    parts = [f"{k}={fields.get(k)}" for k in swept]
    return (" &middot; " + _e(", ".join(parts))) if parts else ""


def _stat_cell(stats: CycleSummary | None) -> str:
    if stats is None:
        return '<td class="num">-</td>'
    ci = stats.ci
    return (
        f'<td class="num">{_num(stats.mean)}<br>'
        f'<span class="ci">[{_num(ci.low)}, {_num(ci.high)}]</span></td>'
    )


#: (x metric, name, maximise x) of each energy scatter; y is always J per output token
_FRONTS = (
    ("ttft_ms_mean", "energy-TTFT", False),
    ("itl_ms_mean", "energy-ITL", False),
    ("output_tokens_per_s", "energy-throughput", True),
)


def _points(
    groups: list[ConfigGroup], x_metric: str
) -> list[tuple[ConfigGroup, CycleSummary, CycleSummary]]:
    """Configurations with both J/token and ``x_metric`` measured: (group, x, y)."""
    out = []
    for g in groups:
        x, y = g.stats.get(x_metric), g.stats.get("j_per_output_token")
        if x is not None and y is not None:
            out.append((g, x, y))
    return out


def _front_membership(groups: list[ConfigGroup]) -> dict[int, list[str]]:
    """id(group) -> names of the Pareto fronts it is on."""
    member: dict[int, list[str]] = {}
    for x_metric, name, maximise in _FRONTS:
        pts = _points(groups, x_metric)
        front = pareto_front(
            [p[1].mean for p in pts], [p[2].mean for p in pts], maximise_x=maximise
        )
        if len(pts) > 1:
            for i in front:
                member.setdefault(id(pts[i][0]), []).append(name)
    return member


def _basis_caption(groups: Sequence[ConfigGroup]) -> str:
    """The energy-basis line under an energy figure (MIXED / ESTIMATE called out)."""
    bases = distinct([b for g in groups for b in g.bases])
    estimate = any(g.estimate for g in groups)
    cls = "basis estimate" if estimate else "basis"
    if len(bases) > 1:
        text = "MIXED energy bases (not like for like): " + " | ".join(bases)
    else:
        text = "energy basis: " + (bases[0] if bases else "not measured")
    return f'<p class="{cls}">{_e(text)}</p>'


def _basis_short(groups: Sequence[ConfigGroup]) -> str:
    """A one-line basis for a chart title."""
    bases = distinct([b for g in groups for b in g.bases])
    if len(bases) > 1:
        return "MIXED energy bases, see below"
    return bases[0] if bases else "not measured"


# ---- charts --------------------------------------------------------------------------------


class _Charts:
    """Builds the figures and appends their sections to the page."""

    def __init__(self, go: Any, make_subplots: Any, page: Page) -> None:
        self.go, self.make_subplots, self.page = go, make_subplots, page

    def _add(self, heading: str, fig: Any, div_id: str, caption: str = "") -> None:
        height = int(fig.layout.height or 450)
        fig.update_layout(margin={"t": 80, "l": 70, "r": 30, "b": 60}, template="plotly_white")
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config=PLOT_CONFIG,
            default_height=f"{height}px",
            default_width="100%",
        )
        self.page.n_charts += 1
        self.page.sections.append(
            f'<h2>{_e(heading)}</h2><section class="chart" data-chart="{div_id}">{div}</section>'
            f"{caption}"
        )

    def _missing(self, heading: str, text: str) -> None:
        self.page.sections.append(f'<h2>{_e(heading)}</h2><p class="note">{_e(text)}</p>')

    def j_per_token(self, groups: list[ConfigGroup]) -> None:
        heading = "Energy per output token"
        shown = [g for g in groups if g.stats.get("j_per_output_token") is not None]
        if not shown:
            self._missing(
                heading, "not measured: no result has J per output token " + _why_no_energy(groups)
            )
            return
        fig = self.go.Figure()
        for i, basis in enumerate(distinct([g.basis for g in shown])):
            part = [g for g in shown if g.basis == basis]
            stats = [g.stats["j_per_output_token"] for g in part]
            fig.add_trace(
                self.go.Bar(
                    x=[g.label for g in part],
                    y=[s.mean for s in stats if s],
                    name=_short(basis),
                    marker_color=PALETTE[i % len(PALETTE)],
                    marker_pattern_shape="/" if any(g.estimate for g in part) else "",
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [s.ci.high - s.mean for s in stats if s],
                        "arrayminus": [s.mean - s.ci.low for s in stats if s],
                    },
                    hovertemplate="%{x}<br>%{y:.4g} J/output token<extra>"
                    + _e(_short(basis))
                    + "</extra>",
                )
            )
        pct = round(CONFIDENCE * 100)
        fig.update_layout(
            title={
                "text": f"J per output token: mean and {pct}% CI over cycles<br><sup>{_e(_basis_short(shown))}</sup>"
            },
            yaxis_title="J / output token",
            height=460,
            showlegend=True,
            legend={"orientation": "h", "y": -0.25},
        )
        missing = [g.label for g in groups if g not in shown]
        note = f'<p class="note">not measured: {_e(", ".join(missing))}</p>' if missing else ""
        self._add(heading, fig, "energy-per-token", _basis_caption(shown) + note)

    def scatter(
        self,
        groups: list[ConfigGroup],
        x_metric: str,
        x_title: str,
        div_id: str,
        heading: str,
        *,
        maximise_x: bool = False,
    ) -> None:
        pts = _points(groups, x_metric)
        if not pts:
            self._missing(heading, f"not measured: no configuration has both J/token and {x_title}")
            return
        go = self.go
        fig = go.Figure()
        for i, basis in enumerate(distinct([p[0].basis for p in pts])):
            part = [p for p in pts if p[0].basis == basis]
            fig.add_trace(
                go.Scatter(
                    x=[p[1].mean for p in part],
                    y=[p[2].mean for p in part],
                    mode="markers",
                    name=_short(basis),
                    marker={"size": 10, "color": PALETTE[i % len(PALETTE)],
                            "symbol": "x" if any(p[0].estimate for p in part) else "circle"},
                    error_x=_error_bars([p[1] for p in part]),
                    error_y=_error_bars([p[2] for p in part]),
                    text=[p[0].label for p in part],
                    hovertemplate="%{text}<br>x %{x:.4g}<br>%{y:.4g} J/output token<extra>"
                    + _e(_short(basis))
                    + "</extra>",
                )
            )  # fmt: skip
        front = pareto_front(
            [p[1].mean for p in pts], [p[2].mean for p in pts], maximise_x=maximise_x
        )
        fig.add_trace(
            go.Scatter(
                x=[pts[i][1].mean for i in front],
                y=[pts[i][2].mean for i in front],
                mode="lines+markers",
                line={"shape": "hv", "dash": "dot", "color": "#222"},
                marker={"size": 16, "symbol": "circle-open", "color": "#222"},
                name="Pareto front",
                text=[pts[i][0].label for i in front],
                hovertemplate="%{text} (Pareto front)<extra></extra>",
            )
        )
        better = "higher" if maximise_x else "lower"
        fig.update_layout(
            title={"text": f"{heading} (J per output token; lower-{'right' if maximise_x else 'left'} is better)"
                   f"<br><sup>{_e(_basis_short([p[0] for p in pts]))}</sup>"},
            xaxis_title=x_title,
            yaxis_title="J / output token",
            height=480,
            legend={"orientation": "h", "y": -0.2},
        )  # fmt: skip
        names = ", ".join(pts[i][0].label for i in front)
        caption = (
            _basis_caption([p[0] for p in pts])
            + f'<p class="meta">Pareto front (no configuration has both lower J/token and '
            f"{better} {_e(x_title)}): {_e(names)}. Error bars: {round(CONFIDENCE * 100)}% CI.</p>"
        )
        self._add(heading, fig, div_id, caption)

    def phases(self, groups: list[ConfigGroup]) -> None:
        heading = "Prefill vs decode energy"
        rows: list[tuple[ConfigGroup, dict[str, list[PhaseEnergy]], list[str]]] = []
        reasons: dict[str, str] = {}
        for g in groups:
            per_phase: dict[str, list[PhaseEnergy]] = {}
            methods: list[str] = []
            for run in g.completed:
                for p in phase_energy(run.result) or []:
                    per_phase.setdefault(p.phase, []).append(p)
                rep = run.result.energy.phases if run.result.energy is not None else None
                if rep is not None and rep.not_measured is None:
                    methods.append(phase_method_text(rep))
                elif (why := phases_not_measured(run.result)) is not None:
                    reasons.setdefault(g.label, why)
            if per_phase:
                rows.append((g, per_phase, distinct(methods)))
        if not rows:
            seen = distinct(list(reasons.values()))
            self._missing(heading, "; ".join(seen) if seen else PHASES_NOT_MEASURED)
            return
        fig = self.go.Figure()
        names = distinct([k for _, per_phase, _ in rows for k in per_phase])
        for i, phase in enumerate(names):
            means = [_phase_means(per_phase.get(phase, [])) for _, per_phase, _ in rows]
            fig.add_trace(
                self.go.Bar(
                    x=[g.label for g, _, _ in rows],
                    y=[m[0] for m in means],
                    error_y={"type": "data", "symmetric": False,
                             "array": [_gap(m[0], m[2]) for m in means],
                             "arrayminus": [_gap(m[1], m[0]) for m in means]},
                    customdata=[m[3] for m in means],
                    hovertemplate="%{x}<br>%{y:.4g} J<br>%{customdata}<extra>" + _e(phase)
                    + "</extra>",
                    name=phase,
                    marker_color=PALETTE[i % len(PALETTE)],
                )
            )  # fmt: skip
        fig.update_layout(
            barmode="group",
            title={"text": "Energy per phase (J, mean over cycles; bars: 95% CI of one run)"
                   f"<br><sup>{_e(_basis_short([g for g, _, _ in rows]))}</sup>"},
            yaxis_title="J",
            height=440,
        )  # fmt: skip
        used = distinct([m for _, _, ms in rows for m in ms])
        method = f'<p class="meta">Attribution: {_e("; ".join(used))}</p>' if used else ""
        absent = [g.label for g in groups if g not in [r[0] for r in rows]]
        note = "".join(
            f'<p class="note">{_e(g)}: {_e(reasons.get(g, PHASES_NOT_MEASURED))}</p>'
            for g in absent
        )
        caption = _basis_caption([r[0] for r in rows]) + method + note
        self._add(heading, fig, "phase-energy", caption)

    def timeline(self, runs: list[SavedRun]) -> None:
        heading = "Power, temperature and SM clock over time"
        series = [(r, s) for r in runs if (s := read_timeline(r)) is not None]
        if not series:
            self._missing(
                heading,
                f"no timeline: no run directory here has a {TIMESERIES_FILENAME} (telemetry "
                "off, or no NVIDIA GPU was sampled: the timeline records GPUs only)",
            )
            return
        n_series = 3 * sum(len(devices) for _, devices in series)
        budget = max(200, min(TIMELINE_POINTS, TIMELINE_POINTS_TOTAL // n_series))
        fig = self.make_subplots(
            rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
            subplot_titles=[t for _, t in TIMELINE_FIELDS],
        )  # fmt: skip
        owners: list[int] = []  # which experiment each trace belongs to
        for k, (_run, devices) in enumerate(series):
            for d, (device, cols) in enumerate(sorted(devices.items())):
                for row, (name, label) in enumerate(TIMELINE_FIELDS, start=1):
                    xs, ys = _downsample(cols["t"], cols[name], budget)
                    fig.add_trace(
                        self.go.Scatter(
                            x=xs, y=ys, mode="lines", name=f"{device} {label}",
                            line={"color": PALETTE[d % len(PALETTE)], "width": 1.5},
                            visible=k == 0, showlegend=row == 1, legendgroup=device,
                        ),
                        row=row, col=1,
                    )  # fmt: skip
                    owners.append(k)
        buttons = [
            {
                "label": run.display_label[:60],
                "method": "update",
                "args": [
                    {"visible": [o == k for o in owners]},
                    {"title.text": _timeline_title(run)},
                ],
            }
            for k, (run, _) in enumerate(series)
        ]
        layout: dict[str, Any] = {
            "title": {"text": _timeline_title(series[0][0])},
            "height": 680,
            "legend": {"orientation": "h", "y": -0.08},
        }
        if len(series) > 1:
            layout["updatemenus"] = [
                {"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right",
                 "y": 1.12, "yanchor": "top", "showactive": True}
            ]  # fmt: skip
        fig.update_layout(**layout)
        fig.update_xaxes(title_text="time since first sample (s)", row=3, col=1)
        without = [r.display_label for r in runs if all(r is not s[0] for s in series)]
        caption = (
            '<p class="meta">NVML power (a ~1 s moving average on Ampere and newer), '
            "temperature and SM clock, polled by the telemetry sampler over the whole run "
            "(baseline, warm-up and the measurement window). Power samples are the polled "
            "cross-check, not the energy counter. Pick the experiment in the drop-down. "
            f"Long timelines are downsampled to {budget} points per series.</p>"
        )
        if without:
            caption += f'<p class="note">no timeline: {_e(", ".join(without))}</p>'
        self._add(heading, fig, "timeline", caption)


def _timeline_title(run: SavedRun) -> str:
    return f"Timeline: {_e(run.display_label)}<br><sup>{_e(run.run_dir.name)}</sup>"


def _error_bars(stats: Sequence[CycleSummary]) -> dict[str, Any]:
    return {
        "type": "data",
        "symmetric": False,
        "array": [s.ci.high - s.mean for s in stats],
        "arrayminus": [s.mean - s.ci.low for s in stats],
        "thickness": 1,
    }


def _short(basis: str, limit: int = 70) -> str:
    return basis if len(basis) <= limit else basis[: limit - 3] + "..."


def _why_no_energy(groups: list[ConfigGroup]) -> str:
    reasons = distinct(
        [r.result.energy_not_measured_reason for g in groups for r in g.completed]
        + [why for g in groups for r in g.completed if r.result.energy for why in r.result.energy.not_measured.values()]
    )  # fmt: skip
    return f"({'; '.join(reasons)})" if reasons else ""


def read_timeline(run: SavedRun) -> dict[str, dict[str, list[float | None]]] | None:
    """The run's timeline per device: ``{device: {"t": [...], "power_w": [...], ...}}``.

    Time is seconds since the run's first sample. None when there is no readable file.
    """
    name = run.result.timeseries_path or TIMESERIES_FILENAME
    path = run.run_dir / name
    if not path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["t_s", "device", *(f for f, _ in TIMELINE_FIELDS)])
    except Exception as e:  # a damaged file must not cost the whole report
        logger.warning("%s: unreadable timeline (%s): skipped", path, e)
        return None
    cols = table.to_pydict()
    if not cols["t_s"]:
        return None
    t0 = min(cols["t_s"])
    devices: dict[str, dict[str, list[float | None]]] = {}
    order = sorted(range(len(cols["t_s"])), key=lambda i: cols["t_s"][i])
    for i in order:
        dev = devices.setdefault(
            str(cols["device"][i]), {"t": [], **{f: [] for f, _ in TIMELINE_FIELDS}}
        )
        dev["t"].append(cols["t_s"][i] - t0)
        for f, _ in TIMELINE_FIELDS:
            dev[f].append(cols[f][i])
    return devices


def _downsample(
    xs: list[float | None], ys: list[float | None], budget: int
) -> tuple[list[float | None], list[float | None]]:
    """Every k-th point (and the last) so that at most ``budget`` remain."""
    n = len(xs)
    if n <= budget:
        return xs, ys
    step = math.ceil(n / budget)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


# ---- environment and quality ---------------------------------------------------------------

_ENV_ROWS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("GPUs", lambda e: ", ".join(f"{g.nvml_index}: {g.name}" for g in e.gpus) or "none visible"),
    ("GPU power limit (W)", lambda e: ", ".join(f"{g.power_limit_w:g}" for g in e.gpus if g.power_limit_w) or "-"),
    ("driver / CUDA (driver)", lambda e: f"{e.driver_version or '-'} / {e.cuda_driver_version or '-'}"),
    ("torch CUDA", lambda e: e.torch_cuda_version or "-"),
    ("NVML", lambda e: "available" if e.nvml_available else f"unavailable: {e.nvml_error or '?'}"),
    ("CPU", lambda e: f"{e.cpu_model or '?'} ({e.cpu_physical_cores or '?'} cores, {e.cpu_logical_cores or '?'} threads)"),
    ("RAM (GB)", lambda e: f"{e.ram_total_gb:.1f}" if e.ram_total_gb else "-"),
    ("OS / kernel", lambda e: f"{e.os} / {e.kernel or '-'}"),
    ("Python", lambda e: e.python_version),
    ("libraries", lambda e: ", ".join(f"{k} {v}" for k, v in e.library_versions.items() if v) or "-"),
    ("container", lambda e: f"yes ({e.container_evidence})" if e.in_container else "no"),
    ("CUDA_VISIBLE_DEVICES", lambda e: e.cuda_visible_devices or "-"),
)  # fmt: skip


def _environment(runs: list[SavedRun]) -> str:
    envs: dict[str, tuple[list[str], Any]] = {}
    for run in runs:
        env = run.result.environment
        if env is None:
            continue
        values = [str(f(env)) for _, f in _ENV_ROWS]
        key = "\x00".join(values)
        labels = envs.setdefault(key, ([], values))[0]
        if run.display_label not in labels:
            labels.append(run.display_label)
    if not envs:
        return '<h2>Environment</h2><p class="note">no environment snapshot in these results</p>'
    cols = list(envs.values())
    head = "".join(f"<th>environment {i + 1}</th>" for i in range(len(cols)))
    body = "".join(
        f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{_e(c[1][i])}</td>" for c in cols) + "</tr>"
        for i, (name, _) in enumerate(_ENV_ROWS)
    )
    used = "<tr><th>experiments</th>" + "".join(
        f"<td>{len(c[0])}: {_e(', '.join(c[0][:12]))}{' ...' if len(c[0]) > 12 else ''}</td>"
        for c in cols
    ) + "</tr>"  # fmt: skip
    more = (
        f'<p class="banner stack">{len(cols)} different environments: results come from more '
        "than one machine or software stack.</p>"
        if len(cols) > 1
        else ""
    )
    return f"<h2>Environment</h2>{more}<table><tr><th></th>{head}</tr>{body}{used}</table>"


def _quality(collection: Collection, groups: list[ConfigGroup]) -> str:
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for g in groups:
        for run in g.runs:
            for w in run.result.warnings:
                grouped.setdefault((w.severity, w.code), []).append((run.display_label, w.message))
    rank = {"critical": 0, "warning": 1, "info": 2}
    rows = []
    for (sev, code), items in sorted(
        grouped.items(), key=lambda kv: (rank.get(kv[0][0], 3), kv[0][1])
    ):
        messages = distinct([m for _, m in items])
        where = distinct([label for label, _ in items])
        detail = "".join(f"<li>{_e(label)}: {_e(m)}</li>" for label, m in items)
        rows.append(
            f'<tr><td class="sev-{_e(sev)}">{_e(sev)}</td><td>{_e(code)}</td>'
            f'<td class="num">{len(items)}</td><td>{_e(messages[0])}'
            f"{f' (+{len(messages) - 1} other wording)' if len(messages) > 1 else ''}"
            f"<details><summary>{len(where)} experiment(s)</summary><ul>{detail}</ul></details></td></tr>"
        )
    table = (
        "<table><tr><th>severity</th><th>code</th><th>count</th><th>message</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="note">no quality flags</p>'
    )
    extra = []
    for study in collection.studies:
        s = study.summary
        if s is None:
            extra.append(
                f"<li>{_e(study.name)}: no study_summary.json (still running, or stopped hard)</li>"
            )
            continue
        extra += [
            f"<li>{_e(study.name)}: FAILED {_e(f.label)} cycle {f.cycle}: {_e(f.reason)}</li>"
            for f in s.failures
        ]
        extra += [
            f"<li>{_e(study.name)}: skipped {_e(sk.point)}: {_e(sk.reason)}</li>"
            for sk in s.skipped
        ]
        extra += [f"<li>{_e(study.name)}: {_e(w)}</li>" for w in s.warnings]
        if s.stopped_reason:
            extra.append(f"<li>{_e(study.name)}: STOPPED: {_e(s.stopped_reason)}</li>")
    failed = [r for r in collection.runs if r.result.failed]
    extra += [
        f"<li>FAILED {_e(r.display_label)}: {_e(r.result.error_type or 'error')}</li>"
        for r in failed
    ]
    studies = (
        f"<h3>Study notes, failures and skipped points</h3><ul>{''.join(extra)}</ul>"
        if extra
        else ""
    )
    return f"<h2>Quality flags</h2>{table}{studies}"


def _phase_means(items: list[PhaseEnergy]) -> tuple[float | None, float | None, float | None, str]:
    """Mean energy over cycles, the mean CI edges (one run's CI), and a J/token hover text."""
    if not items:
        return None, None, None, ""
    n = len(items)
    mean = sum(p.energy_j for p in items) / n
    lows = [p.ci_low_j for p in items if p.ci_low_j is not None]
    highs = [p.ci_high_j for p in items if p.ci_high_j is not None]
    lo = sum(lows) / len(lows) if len(lows) == n else None
    hi = sum(highs) / len(highs) if len(highs) == n else None
    jt = [p.j_per_token for p in items if p.j_per_token is not None]
    text = f"{1e3 * sum(jt) / len(jt):.4g} mJ/token" if jt else "no tokens counted"
    return mean, lo, hi, text


def _gap(low: float | None, high: float | None) -> float:
    """high - low for an error bar (0 where either is missing)."""
    return high - low if low is not None and high is not None else 0.0
