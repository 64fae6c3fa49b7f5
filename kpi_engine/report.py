"""Self-contained HTML pages: a KPI report with trend charts, and the KPI catalogue.

Each page is one file with its CSS, its charts (inline SVG drawn here) and a tiny script
inline: no external URL of any kind, so it opens offline and can be mailed or archived.
A Content-Security-Policy allows only the page's own style and script (by hash), so even
a spec text that slipped through unescaped could neither run nor load anything.

    from kpi_engine import open_project
    from kpi_engine.report import build_report, write_html

    with open_project("examples/marketing") as project:
        write_html("report.html", build_report(project, ["revenue", "nps"], by="channel"))

Every text that comes from specs or from the warehouse (labels, descriptions, formulas,
dimension values) is untrusted and escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from .calendar import SUBDAILY
from .catalog import (_UNIT_NAMES, Lineage, _target, documented_sources, lineage, readers, source_facts,
                      tag_groups)
from .engine import _date
from .errors import QueryError, UsageError
from .files import write_atomically
from .completeness import is_complete
from .freshness import latest_complete
from .output import format_value, with_unit
from .resolve import Model
from .spec import display_name, relation_name
from .targets import _describe

# Line colours of the series of a chart: the Okabe-Ito palette, told apart with each common
# kind of colour blindness, less its yellow (too faint for a line on white). Past seven series
# a chart becomes small multiples; a report-wide series name past the seventh repeats a
# colour with a dash pattern.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
_DASHES = ("", "6 3", "2 3", "8 3 2 3")
_MAX_MARKERS = 60  # periods above which a chart marks only the latest point

# Chart geometry (SVG user units; the chart scales to its column).
_WIDTH, _HEIGHT = 640, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 14, 12, 30

_STYLE = """
:root { color-scheme: light; --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --ok: #15803d;
        --bad: #b91c1c; --none: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
       "Helvetica Neue", Arial, sans-serif; color: var(--ink); background: #f9fafb; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0 0 16px; color: var(--muted); }
h2 { font-size: 18px; margin: 0 0 2px; }
h2 code { font-size: 18px; }
table.summary { border-collapse: collapse; width: 100%; max-width: 1100px; background: #fff;
                margin-bottom: 24px; }
table.summary th, table.summary td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); }
table.summary .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
a { color: #1d4ed8; text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
section.kpi { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
              margin: 0 0 16px; max-width: 1100px; }
section.kpi .name { color: var(--muted); font-size: 12px; }
section.kpi p.description { margin: 6px 0 10px; max-width: 75ch; }
dl.figures { display: flex; flex-wrap: wrap; gap: 8px 32px; margin: 8px 0 12px; }
dl.figures div { min-width: 140px; }
dl.figures dt { color: var(--muted); font-size: 12px; }
dl.figures dd { margin: 0; font-size: 18px; font-variant-numeric: tabular-nums; }
.good { color: var(--ok); }
.bad { color: var(--bad); }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px; color: #fff; }
.status.ok { background: var(--ok); }
.status.breached { background: var(--bad); }
.status.no-data { background: var(--none); }
.note { color: var(--muted); font-size: 12px; }
svg.trend { display: block; width: 100%; max-width: 760px; height: auto; }
svg.trend .grid { stroke: var(--line); stroke-width: 1; }
svg.trend .latest { stroke: #9ca3af; stroke-width: 1; stroke-dasharray: 3 3; }
svg.trend text { font-size: 11px; fill: var(--muted); }
svg.trend path.line { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
svg.trend .off, .off { display: none; }
figure.chart { margin: 0; }
ul.legend button { font: inherit; color: var(--ink); background: none; border: 1px solid transparent;
                   border-radius: 4px; padding: 1px 6px; cursor: pointer; }
ul.legend button:hover { border-color: var(--line); }
ul.legend button[aria-pressed="false"] { color: var(--muted); text-decoration: line-through; opacity: 0.55; }
div.multiples { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 8px 16px;
                max-width: 1060px; }
figure.multiple { margin: 0; }
figure.multiple figcaption { font-size: 12px; font-weight: 600; }
svg.trend.small { max-width: 360px; }
svg.trend line.partial { stroke: #fff; stroke-width: 3; stroke-dasharray: 4 4; }
svg.trend text.partial { font-style: italic; }
p.stale { color: var(--bad); font-weight: 600; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 16px; padding: 0; margin: 6px 0 0; }
ul.legend svg { vertical-align: middle; margin-right: 4px; }
p.nodata { color: var(--muted); font-style: italic; }
nav.toc table { border-collapse: collapse; background: #fff; margin-bottom: 24px; }
nav.toc td, nav.toc th { text-align: left; padding: 4px 10px; border-bottom: 1px solid var(--line); }
pre.formula { background: #f3f4f6; padding: 8px 12px; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
header strong.currency { color: var(--ink); font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
section.source, section.tags, section.sources { background: #fff; border: 1px solid var(--line); border-radius: 8px;
                 padding: 16px 20px; margin: 0 0 16px; max-width: 1100px; }
section.source { border-left: 4px solid #009E73; }
div.tag-groups { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 4px 24px; }
div.tag h3 { font-size: 14px; margin: 8px 0 2px; }
div.tag ul { margin: 0; padding-left: 18px; }
a.tag { background: #eef2ff; border-radius: 8px; padding: 0 6px; font-size: 12px; }
figure.lineage { margin: 12px 0 0; overflow-x: auto; }
svg.lineage { display: block; max-width: 100%; height: auto; }
svg.lineage path.edge { fill: none; stroke: #9ca3af; stroke-width: 1.2; }
svg.lineage rect { stroke-width: 1.2; }
svg.lineage text { font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; fill: var(--ink); }
svg.lineage .n-kpi rect { fill: #e0ecf7; stroke: #0072B2; }
svg.lineage .n-root rect { fill: #0072B2; }
svg.lineage .n-root text { fill: #fff; font-weight: 600; }
svg.lineage .n-source rect { fill: #dff3ec; stroke: #009E73; }
svg.lineage .n-column rect { fill: #f3f4f6; stroke: #9ca3af; }
svg.lineage a:hover rect { stroke-width: 2.4; }
.k-kpi { color: #0072B2; } .k-source { color: #007a59; } .k-column { color: var(--muted); }
"""

# Counts the charts and their lines once the page is rendered, for people and for the
# browser test: an error for any chart without a line.
_REPORT_SCRIPT = """
(function () {
  var charts = document.querySelectorAll("svg.trend");
  var lines = document.querySelectorAll("svg.trend path.line");
  for (var i = 0; i < charts.length; i++) {
    if (!charts[i].querySelector("path.line")) {
      console.error("kpi-report-error: the chart of " + charts[i].getAttribute("data-kpi") + " has no line");
    }
  }
  // A legend entry shows or hides its series (line and markers) in its own chart.
  function toggle(event) {
    var button = event.currentTarget;
    var on = button.getAttribute("aria-pressed") !== "true";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    var groups = button.closest("figure.chart").querySelectorAll("svg g.series");
    for (var k = 0; k < groups.length; k++) {
      if (groups[k].getAttribute("data-series") === button.getAttribute("data-series")) {
        groups[k].classList.toggle("off", !on);
      }
    }
  }
  var buttons = document.querySelectorAll("button.series-toggle");
  for (var j = 0; j < buttons.length; j++) {
    buttons[j].addEventListener("click", toggle);
  }
  console.log("kpi-report-ready charts=" + charts.length + " lines=" + lines.length + " toggles=" + buttons.length);
})();
"""

_CATALOG_SCRIPT = """
(function () {
  var sections = document.querySelectorAll("section.kpi");
  var sources = document.querySelectorAll("section.source");
  var graphs = document.querySelectorAll("svg.lineage");
  var links = document.querySelectorAll("a[href^='#']");
  for (var i = 0; i < links.length; i++) {
    if (!document.getElementById(links[i].getAttribute("href").slice(1))) {
      console.error("kpi-catalog-error: broken link " + links[i].getAttribute("href"));
    }
  }
  console.log("kpi-catalog-ready kpis=" + sections.length + " sources=" + sources.length + " lineages=" +
              graphs.length + " links=" + links.length);
})();
"""


# --- the report ------------------------------------------------------------------------


def build_report(project, kpis: Sequence[str] | None = None, grain: str = "month", by: str | None = None,
                 as_of: dt.date | str | None = None) -> str:
    """One self-contained HTML page: for each KPI its label and description, its value in the
    latest ``grain`` period complete before ``as_of`` (default today), the change from the
    period before, its min/max target status and a trend chart of every period up to the
    latest; with ``by``, one line per value of that dimension for the KPIs it can slice
    (a colour per value, the same in every chart; a legend that shows and hides lines; small
    multiples past ``len(PALETTE)`` values). Lines break at periods without a value.

    Two queries at most: every KPI by period, then the ones ``by`` can slice, by period and
    dimension. ``project`` is a ``KpiProject``.
    """
    # built-in grains of days or longer (a report's periods) and the project's granularities
    grains = [g for g in project.project.config.calendar.grains if g not in SUBDAILY]
    if grain not in grains:
        raise UsageError(f"unknown grain '{grain}'.", None, f"Use one of: {', '.join(grains)}.")
    model = project.model(strict=False)  # a missing table fails only the KPIs that read it
    # By default every KPI the warehouse can compute: those reading unmapped sources are left out.
    names = list(dict.fromkeys(kpis)) if kpis else [n for n in project.project.kpis if not model.kpis[n].unavailable]
    if not names:
        raise UsageError("the project defines no KPIs.", None, "Add KPIs to a spec file first.")
    specs = {name: model.kpi(name).spec for name in names}  # raises on an unknown name
    calendar = project.project.config.calendar
    currency = project.project.config.currency
    as_of = _date(as_of, "as_of", calendar, clock=False)  # a date, or text such as 'start of month' (dates.py)
    sources = [source for name in names for source in sorted(model.kpi(name).sources)]
    chosen = latest_complete(project, sources, grain, as_of)
    end = chosen.end or calendar.period_start(calendar.today(), grain)
    latest = calendar.shift(end, grain, -1)
    previous = calendar.shift(latest, grain, -1)

    totals: dict[str, dict[dt.date, float | None]] = {name: {} for name in names}
    first = latest
    for row in project.evaluate(names, grain=grain, end=end).to_dicts():
        period = _day(row["period"])
        first = min(first, period)
        for name in names:
            totals[name][period] = _number(row.get(name))

    split: dict[str, dict[Any, dict[dt.date, float | None]]] = {}
    unsplit: list[str] = []
    if by:
        split_names = [name for name in names if by in model.kpi(name).dimensions]
        unsplit = [name for name in names if name not in split_names]
        if not split_names:
            known = sorted({d for name in names for d in model.kpi(name).dimensions})
            raise QueryError(f"none of the KPIs of the report can be sliced by '{by}'.", None,
                             f"Dimensions of these KPIs: {', '.join(known) or 'none'}.")
        split = {name: {} for name in split_names}
        for row in project.evaluate(split_names, by=[by], grain=grain, end=end).to_dicts():
            period = _day(row["period"])
            first = min(first, period)
            for name in split_names:
                split[name].setdefault(row.get(by), {})[period] = _number(row.get(name))

    axis = calendar.periods(first, end, grain)
    styles = series_styles(_dimension_text(value) for values in split.values() for value in values)
    labels = {period: period_label(period, grain) for period in axis}
    any_partial = False
    cards, summary = [], []
    for name in names:
        spec = specs[name]
        values = totals[name]
        current, before = values.get(latest), values.get(previous)
        shown = format_value(current, spec.unit, currency, spec.format)
        absolute, percent = change_text(current, before, spec.unit, currency, spec.format)
        trend = _trend_class(current, before, spec.target)
        status, target_text = target_status(current, spec.target)
        title = spec.label or name

        if name in split:
            series = [(_dimension_text(value), split[name][value]) for value in _ordered(split[name])]
        else:
            series = [(None, values)]
        # periods not wholly inside the data of this KPI's sources: drawn dashed, labelled
        own = {source: chosen.extents[source] for source in model.kpi(name).sources if source in chosen.extents}
        maturities = project.maturities(model, [name], own)  # a cohort reading is partial until it matures
        partial = {period for period in axis if not is_complete(period, grain, None, end, own, calendar, maturities)}
        any_partial = any_partial or bool(partial)
        chart = _chart(name, title, series, axis, labels, latest, spec.unit, currency, spec.format, partial,
                       styles)

        status_html = ""
        if status:
            status_html = f"<div><dt>Target {escape(target_text)}</dt><dd>{_status_badge(status)}</dd></div>"
        goal = _target(spec.target) if spec.target else ""
        unit_name = _UNIT_NAMES.get(spec.unit, spec.unit)
        parts = [f'<section class="kpi" id="kpi-{escape(name)}">',
                 f'<h2>{escape(title)}</h2><div class="name"><code>{escape(name)}</code> · {escape(unit_name)}</div>']
        if spec.description:
            parts.append(f'<p class="description">{escape(" ".join(spec.description.split()))}</p>')
        parts.append('<dl class="figures">'
                     f'<div><dt>{escape(labels.get(latest, period_label(latest, grain)))}</dt>'
                     f'<dd class="latest">{escape(shown)}</dd></div>'
                     f'<div><dt>Change vs {escape(period_label(previous, grain))}</dt>'
                     f'<dd class="change {trend}">{escape(absolute)} ({escape(percent)})</dd></div>'
                     f"{status_html}</dl>")
        if goal:
            parts.append(f'<p class="note">Goal: {escape(goal)}</p>')
        if by and name in unsplit:
            parts.append(f'<p class="note">Not split by {escape(by)}: this KPI cannot be sliced by it.</p>')
        parts.append(chart)
        parts.append("</section>")
        cards.append("\n".join(parts))
        summary.append(f'<tr><td><a href="#kpi-{escape(name)}">{escape(title)}</a></td>'
                       f'<td class="num">{escape(shown)}</td>'
                       f'<td class="num {trend}">{escape(absolute)} ({escape(percent)})</td>'
                       f"<td>{_status_badge(status)}</td></tr>")

    heading = (f"{escape(grain.replace('_', ' ').capitalize())} KPIs · "
               f"{escape(labels.get(latest, period_label(latest, grain)))}: {escape(chosen.basis)}")
    if by:
        heading += f" · split by {escape(by)}"
    warnings = "".join(f'<p class="stale">Stale data: {escape(message)}</p>' for message in chosen.stale)
    if any_partial:
        warnings += ('<p class="note">Dashed segments and hollow markers are partial periods: '
                     "not wholly inside the data of every source.</p>")
    body = "\n".join([
        f"<header><h1>KPI report: {escape(project.project.config.name)}</h1><p>{heading}</p>{warnings}</header>",
        ('<table class="summary"><thead><tr><th>KPI</th><th class="num">Latest</th><th class="num">Change</th>'
         "<th>Target</th></tr></thead>"),
        "<tbody>", *summary, "</tbody></table>",
        *cards,
    ])
    return _page(f"KPI report: {project.project.config.name}", body, _REPORT_SCRIPT)


def write_report(project, path: str | Path, kpis: Sequence[str] | None = None, grain: str = "month",
                 by: str | None = None, as_of: dt.date | str | None = None) -> Path:
    """Build the report and write it atomically to ``path``; returns the path."""
    path = Path(path)
    write_html(path, build_report(project, kpis, grain=grain, by=by, as_of=as_of))
    return path


def write_html(path: str | Path, content: str) -> None:
    """Write a page atomically (see ``files.write_atomically``)."""
    write_atomically(path, content)


def period_label(period: dt.date, grain: str) -> str:
    """2025-12 for a month, 2025 Q4, 2025, week of 2025-12-01, or the first day."""
    if grain == "month":
        return f"{period.year:04d}-{period.month:02d}"
    if grain == "quarter":
        return f"{period.year} Q{(period.month - 1) // 3 + 1}"
    if grain == "year":
        return str(period.year)
    if grain == "week":
        return f"week of {period.isoformat()}"
    if grain.startswith("fiscal_"):
        return f"{grain.replace('_', ' ')} from {period.isoformat()}"
    return period.isoformat()


def change_text(current: float | None, previous: float | None, unit: str | None, currency: str = "USD",
                spec: str | None = None) -> tuple[str, str]:
    """(absolute, percent) change from ``previous`` to ``current``: ('+$12.00', '+5.0%').

    The absolute change is in the KPI's unit, except that a change of a percent KPI is in
    percentage points ('+1.5 pts'). The percent change is relative to the size of the
    previous value, so its sign is the direction of the change even when that value is
    negative (an NPS of -10); it is '–' when the previous value is 0 or either is missing.
    """
    if current is None or previous is None:
        return "–", "–"
    delta = current - previous
    absolute = ("-" if delta < 0 else "+") + format_value(abs(delta), unit, currency, spec)
    if unit == "percent" and absolute.endswith("%"):
        absolute = absolute[:-1] + " pts"
    percent = "–" if previous == 0 else f"{100 * delta / abs(previous):+,.1f}%"
    return absolute, percent


def target_status(value: float | None, target) -> tuple[str | None, str]:
    """('ok' | 'breached' | 'no data', '>= 3') for a KPI with a min or max target, as
    ``kpi-engine check`` decides it; (None, '') without one."""
    if not target or not {"min", "max"} & set(target):
        return None, ""
    if value is None:
        return "no data", _describe(target)
    breached = ("min" in target and value < target["min"]) or ("max" in target and value > target["max"])
    return ("breached" if breached else "ok"), _describe(target)


def _status_badge(status: str | None) -> str:
    if not status:
        return ""
    return f'<span class="status {status.replace(" ", "-")}">{escape(status)}</span>'


def _trend_class(current: float | None, previous: float | None, target) -> str:
    """'good' or 'bad' when the KPI has a direction and moved, else ''."""
    direction = (target or {}).get("direction")
    if current is None or previous is None or current == previous or direction not in (
            "higher_is_better", "lower_is_better"):
        return ""
    return "good" if (current > previous) == (direction == "higher_is_better") else "bad"


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _number(value: Any) -> float | None:
    """A value a chart can draw, or None (nulls, NaN, infinities, non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _ordered(values: Iterable[Any]) -> list[Any]:
    """Dimension values in a stable order, null last."""
    return sorted(values, key=lambda v: (v is None, str(v)))


def _dimension_text(value: Any) -> str:
    return "(null)" if value is None else str(value)


# --- charts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The geometry of one chart, in SVG user units (the chart scales to its column)."""
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    small: bool = False


_FULL = _Frame(_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM)
_SMALL = _Frame(320, 150, 58, 10, 12, 26, small=True)


def series_styles(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, dash pattern) of each series name: the names in sorted order take the palette's
    colours in turn, solid first, then the colours again with a dash. Built once per report
    from every name of every chart, so a channel has the same colour in all of them."""
    ordered = sorted(set(names), key=lambda name: (name == "(null)", name))
    return {name: (PALETTE[i % len(PALETTE)], _DASHES[(i // len(PALETTE)) % len(_DASHES)])
            for i, name in enumerate(ordered)}


def runs(values: dict[dt.date, float | None], axis: list[dt.date]) -> list[list[dt.date]]:
    """The unbroken stretches of ``axis`` where the series has a value: a period without one
    (missing or null) ends a stretch, so a line is never drawn across it."""
    found: list[list[dt.date]] = []
    current: list[dt.date] = []
    for period in axis:
        if values.get(period) is None:
            if current:
                found.append(current)
            current = []
        else:
            current.append(period)
    if current:
        found.append(current)
    return found


def _chart(name: str, title: str, series: list[tuple[str | None, dict[dt.date, float | None]]],
           axis: list[dt.date], labels: dict[dt.date, str], latest: dt.date, unit: str | None, currency: str,
           spec: str | None, partial: set[dt.date] = frozenset(),
           styles: dict[str, tuple[str, str]] | None = None) -> str:
    """The trend of one KPI as inline SVG in a <figure>: one line per series, broken where a
    period has no value, markers with the value in a tooltip, y ticks at round values
    labelled in the KPI's unit. Up to len(PALETTE) series share one chart with a legend whose
    entries show or hide their line; more are drawn as small multiples, one small chart per
    series on a common scale. Segments that reach a ``partial`` period are drawn dashed and
    its markers hollow, labelled "partial"."""
    drawn = [(label, values) for label, values in series
             if any(values.get(period) is not None for period in axis)]
    if not drawn:
        return f'<p class="nodata">No values up to {escape(labels.get(latest, latest.isoformat()))}.</p>'
    styles = styles or series_styles(label for label, _ in drawn if label is not None)
    numbers = [values[p] for _, values in drawn for p in axis if values.get(p) is not None]
    scale = axis_scale(min(numbers), max(numbers), unit)
    partial = partial & {p for _, values in drawn for p in axis if values.get(p) is not None}  # only where drawn
    caption = f"Trend of {title}"
    if len(drawn) > len(PALETTE):
        panels = []
        for label, values in drawn:
            svg = _svg(_SMALL, name, f"{caption}: {label}", [(label, values)], axis, labels, latest, unit,
                       currency, spec, partial, styles, scale)
            panels.append(f'<figure class="multiple" data-series="{escape(str(label))}">'
                          f"<figcaption>{escape(str(label))}</figcaption>{svg}</figure>")
        return (f'<div class="multiples" data-kpi="{escape(name)}">' + "\n".join(panels) + "</div>"
                f'<p class="note">{len(drawn)} series: one small chart each, all on the same scale.</p>')
    out = [f'<figure class="chart" data-kpi="{escape(name)}">',
           _svg(_FULL, name, caption, drawn, axis, labels, latest, unit, currency, spec, partial, styles, scale)]
    legend = []
    for label, _ in drawn:
        if label is None:
            continue
        colour, dash = styles[label]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        swatch = f'<line x1="1" x2="17" y1="6" y2="6" stroke="{colour}" stroke-width="3"{dash_attr}/>'
        legend.append(f'<li><button type="button" class="series-toggle" data-series="{escape(label)}" '
                      f'aria-pressed="true" title="Show or hide this line">'
                      f'<svg width="18" height="12" viewBox="0 0 18 12" aria-hidden="true">{swatch}</svg>'
                      f"{escape(label)}</button></li>")
    if legend:
        out.append('<ul class="legend">' + "".join(legend) + "</ul>")
    out.append("</figure>")
    return "\n".join(out)


def _svg(frame: _Frame, name: str, caption: str, drawn: list[tuple[str | None, dict[dt.date, float | None]]],
         axis: list[dt.date], labels: dict[dt.date, str], latest: dt.date, unit: str | None, currency: str,
         spec: str | None, partial: set[dt.date], styles: dict[str, tuple[str, str]],
         scale: tuple[list[float], float, float]) -> str:
    ticks, low, high = scale
    plot_w, plot_h = frame.width - frame.left - frame.right, frame.height - frame.top - frame.bottom
    index = {period: i for i, period in enumerate(axis)}

    def x(period: dt.date) -> float:
        return frame.left + (index[period] * plot_w / (len(axis) - 1) if len(axis) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return frame.top + (high - value) * plot_h / (high - low)

    css = "trend small" if frame.small else "trend"
    out = [(f'<svg class="{css}" data-kpi="{escape(name)}" viewBox="0 0 {frame.width} {frame.height}" role="img" '
            f'aria-label="{escape(caption)}">'), f"<title>{escape(caption)}</title>"]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.0
    for value in ticks:  # grid lines at round values, labelled in the KPI's unit
        gy = y(value)
        out.append(f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
                   f'y1="{gy:.1f}" y2="{gy:.1f}"/>')
        out.append(f'<text class="tick" x="{frame.left - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                   f"{escape(tick_label(value, step, max(abs(t) for t in ticks), unit, currency))}</text>")
    shown = sorted({0, len(axis) - 1, (len(axis) - 1) // 2}) if len(axis) > 2 else list(range(len(axis)))
    if frame.small:
        shown = sorted({0, len(axis) - 1})
    for i in shown:
        anchor = "start" if i == 0 and len(axis) > 1 else ("end" if i == len(axis) - 1 and len(axis) > 1 else "middle")
        out.append(f'<text x="{x(axis[i]):.1f}" y="{frame.height - 8}" text-anchor="{anchor}">'
                   f"{escape(labels[axis[i]])}</text>")
    for period in sorted(partial):
        if index[period] > 0 and axis[index[period] - 1] in partial:
            continue  # one label per run of partial periods: neighbouring labels would overlap
        # at an edge of the plot, the label runs inwards: clear of the tick labels, inside the chart
        anchor = "start" if index[period] == 0 else ("end" if index[period] == len(axis) - 1 else "middle")
        out.append(f'<text class="partial" x="{x(period):.1f}" y="{frame.top - 3}" text-anchor="{anchor}">'
                   "partial</text>")
    if latest in index:
        lx = x(latest)
        out.append(f'<line class="latest" x1="{lx:.1f}" x2="{lx:.1f}" y1="{frame.top}" '
                   f'y2="{frame.height - frame.bottom}"/>')
    for label, values in drawn:
        colour, dash = styles[label] if label is not None else (PALETTE[0], "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        name_attr = f' data-series="{escape(label)}"' if label is not None else ""
        stretches = runs(values, axis)
        path = " ".join("M" + " L".join(f"{x(p):.1f},{y(values[p]):.1f}" for p in run) for run in stretches)
        out.append(f'<g class="series"{name_attr}>')
        out.append(f'<path class="line" d="{path}" stroke="{colour}"{dash_attr}/>')
        for run in stretches:
            for p1, p2 in zip(run, run[1:]):
                if p1 in partial or p2 in partial:  # gaps in the background colour make the segment dashed
                    out.append(f'<line class="partial" x1="{x(p1):.1f}" y1="{y(values[p1]):.1f}" '
                               f'x2="{x(p2):.1f}" y2="{y(values[p2]):.1f}"/>')
        alone = {run[0] for run in stretches if len(run) == 1}  # a value between two gaps: only its marker shows it
        points = [p for run in stretches for p in run]
        marked = points if len(axis) <= _MAX_MARKERS else [p for p in points if p in partial or p in alone] + points[-1:]
        for p in dict.fromkeys(marked):
            tip = f"{labels[p]}: {format_value(values[p], unit, currency, spec)}"
            if label is not None:
                tip = f"{label}, {tip}"
            fill = colour
            if p in partial:
                tip, fill = f"{tip} (partial period)", "#fff"
            out.append(f'<circle cx="{x(p):.1f}" cy="{y(values[p]):.1f}" r="{3.5 if p in alone else 2.5}" '
                       f'fill="{fill}" stroke="{colour}"><title>{escape(tip)}</title></circle>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


_STEPS = (1, 2, 2.5, 5)


def axis_scale(low: float, high: float, unit: str | None, most: int = 5) -> tuple[list[float], float, float]:
    """(ticks, bottom, top) of a y axis showing [low, high]: ticks 1, 2, 2.5 or 5 times a
    power of ten apart (whole numbers for a count), the axis running from the tick at or
    below ``low`` to the one at or above ``high``, with the finest such step that leaves at
    most ``most`` intervals. A constant series is shown between 0 and its value."""
    if low == high:
        low, high = (min(low, 0.0), max(high, 0.0)) if low else (0.0, 1.0)
    magnitude = 10.0 ** math.floor(math.log10((high - low) / most))
    for factor in (1, 10, 100):
        for m in _STEPS:
            step = m * magnitude * factor
            if unit == "count" and not float(step).is_integer():
                continue  # no tick between two whole numbers of things
            first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
            if last - first <= most:
                ticks = [_clean(i * step) for i in range(first, last + 1)]
                return ticks, ticks[0], ticks[-1]
    raise AssertionError("not reached: a step of 100 x magnitude spans at most most + 1 intervals")


def _clean(value: float) -> float:
    """A multiple of a step without floating-point noise (0.30000000000000004 -> 0.3), and never -0."""
    return round(value, 10) + 0.0


_SCALES = ((1e9, "B"), (1e6, "M"), (1e3, "k"))


def tick_label(value: float, step: float, largest: float, unit: str | None, currency: str = "USD") -> str:
    """A y-axis label: as many decimals as the step between ticks needs (0 for 0, 5, 10;
    1 for 2.5, 5.0, 7.5), large values of amounts in thousands (k), millions (M) or
    billions (B) once the largest tick reaches 10,000, and the unit: $1.5M, 1,200 EUR, 15%,
    2.5 d, 30 s."""
    divisor, suffix = 1.0, ""
    if unit not in ("percent", "days", "seconds") and largest >= 1e4:
        divisor, suffix = next((d, s) for d, s in _SCALES if largest >= d)
    scaled_step = step / divisor
    decimals = 0
    while scaled_step and decimals < 6 and abs(scaled_step * 10 ** decimals - round(scaled_step * 10 ** decimals)) > 1e-6:
        decimals += 1
    number = f"{abs(value) / divisor:,.{decimals}f}"
    if float(number.replace(",", "")) == 0:
        number, sign = "0", ""  # the zero line: no decimals, no sign, no k
    else:
        number, sign = number + suffix, "-" if value < 0 else ""
    return sign + with_unit(number, unit, currency)  # the sign first: -$5, not $-5


# --- the catalogue ---------------------------------------------------------------------


def catalog_html(model: Model) -> str:
    """The KPI catalogue of ``kpi-engine docs`` as one browsable HTML page, in the manner of
    dbt docs: the project's currency, a table of contents, the KPIs grouped by tag, then per
    KPI its label, description, formula, unit, sources, dimensions, the KPIs it uses
    (linked), target, owner, tags, where it is defined and its lineage drawn as a graph
    (KPI -> KPIs it uses -> sources -> columns); then every source with its table, time
    column, keys, dimensions, the columns KPIs read and the KPIs that read it."""
    project = model.project
    currency = project.config.currency
    kpis = [model.kpis[name] for name in project.kpis]  # in the order the files define them
    sources = documented_sources(model)
    read_by = readers(model)
    cache: dict[str, dict[str, set[str]]] = {}  # what each KPI reads, shared by the lineages
    toc = ['<nav class="toc"><h2>KPIs</h2><table><thead><tr><th>KPI</th><th>Label</th><th>Unit</th><th>Tags</th>'
           "</tr></thead><tbody>"]
    for kpi in kpis:
        spec = kpi.spec
        toc.append(f'<tr><td><a href="#kpi-{escape(spec.name)}"><code>{escape(spec.name)}</code></a></td>'
                   f"<td>{escape(spec.label or '')}</td><td>{escape(_unit_text(spec.unit, currency))}</td>"
                   f"<td>{_tag_links(spec.tags)}</td></tr>")
    toc.append("</tbody></table></nav>")
    groups = ['<section class="tags" id="tags"><h2>KPIs by tag</h2><div class="tag-groups">']
    for tag, names in tag_groups(model):
        items = "".join(f'<li><a href="#kpi-{escape(n)}"><code>{escape(n)}</code></a>'
                        f"{' · ' + escape(model.kpis[n].spec.label) if model.kpis[n].spec.label else ''}</li>"
                        for n in names)
        groups.append(f'<div class="tag" id="tag-{escape(_slug(tag))}"><h3>{escape(tag)} '
                      f'<span class="note">{len(names)}</span></h3><ul>{items}</ul></div>')
    groups.append("</div></section>")
    sections = []
    for kpi in kpis:
        spec = kpi.spec
        where = spec.where(key=True)
        formula = "\n".join(line.rstrip() for line in spec.formula.strip().splitlines())
        facts = [("Unit", escape(_unit_text(spec.unit, currency, long=True))),
                 ("Sources", ", ".join(f'<a href="#source-{escape(base)}"><code>{escape(shown)}</code></a>'
                                       for shown, base in sorted(_source_links(model, kpi.sources)))),
                 ("Dimensions", ", ".join(f"<code>{escape(d)}</code>" for d in kpi.dimensions) or "none"),
                 ("Uses", ", ".join(f'<a href="#kpi-{escape(r)}"><code>{escape(r)}</code></a>'
                                    for r in kpi.references if r in model.kpis)),
                 ("Target", escape(_target(spec.target))),
                 ("Complete", f"{spec.matures_after_days} days after the period ends (a cohort reading)"
                  if spec.matures_after_days else ""),
                 ("Owner", escape(spec.owner or "")),
                 ("Tags", _tag_links(spec.tags)),
                 ("Defined in", escape(f"{where.file}:{where.line}")),
                 ("Overrides", escape(f"{spec.overrides.file}:{spec.overrides.line}") if spec.overrides else "")]
        parts = [f'<section class="kpi" id="kpi-{escape(spec.name)}">', f"<h2><code>{escape(spec.name)}</code></h2>"]
        if spec.label:
            parts.append(f"<p><strong>{escape(spec.label)}</strong></p>")
        if spec.description:
            parts.append(f'<p class="description">{escape(" ".join(spec.description.split()))}</p>')
        parts.append(f'<pre class="formula">{escape(formula)}</pre>')
        parts.append('<dl class="facts">' + "".join(f"<dt>{label}</dt><dd>{value}</dd>"
                                                     for label, value in facts if value) + "</dl>")
        parts.append(lineage_svg(lineage(model, spec.name, _MAX_LINEAGE_NODES, cache)))
        parts.append("</section>")
        sections.append("\n".join(parts))
    source_parts = ['<section class="sources" id="sources"><h2>Sources</h2>',
                    '<table class="summary"><thead><tr><th>Source</th><th>Label</th><th>Table</th><th>Time</th>'
                    "<th>Read by</th></tr></thead><tbody>"]
    for source in sources:
        source_parts.append(
            f'<tr><td><a href="#source-{escape(source.name)}"><code>{escape(source.name)}</code></a></td>'
            f"<td>{escape(source.label or '')}</td><td><code>{escape(relation_name(source))}</code></td>"
            f"<td><code>{escape(source.time or '')}</code></td><td>{len(read_by.get(source.name, []))} KPIs</td></tr>")
    source_parts.append("</tbody></table></section>")
    for source in sources:
        names = read_by.get(source.name, [])
        facts = source_facts(model, source.name, names)
        rows = []
        for label, items, code in facts:
            if label == "Read by":
                value = ", ".join(f'<a href="#kpi-{escape(n)}"><code>{escape(n)}</code></a>' for n in items)
            elif code:
                value = ", ".join(f"<code>{escape(item)}</code>" for item in items)
            else:
                value = escape("; ".join(items))
            rows.append(f"<dt>{escape(label)}</dt><dd>{value}</dd>")
        parts = [f'<section class="source" id="source-{escape(source.name)}">',
                 f'<h2><code>{escape(source.name)}</code> <span class="note">source</span></h2>']
        if source.label:
            parts.append(f"<p><strong>{escape(source.label)}</strong></p>")
        if source.description:
            parts.append(f'<p class="description">{escape(" ".join(source.description.split()))}</p>')
        parts.append('<dl class="facts">' + "".join(rows) + "</dl></section>")
        source_parts.append("\n".join(parts))
    header = (f"<header><h1>KPI catalogue: {escape(project.config.name)}</h1>"
              f"<p>{len(kpis)} KPIs and {len(sources)} sources, generated from the YAML specs by kpi-engine. "
              f'Amounts are in <strong class="currency">{escape(currency)}</strong>. '
              '<a href="#tags">KPIs by tag</a> · <a href="#sources">Sources</a></p></header>')
    body = "\n".join([header, *toc, *groups, *sections, *source_parts])
    return _page(f"KPI catalogue: {project.config.name}", body, _CATALOG_SCRIPT)


def _unit_text(unit: str, currency: str, long: bool = False) -> str:
    """The unit as the catalogue names it: 'currency (USD)' for amounts."""
    if unit == "currency":
        return f"currency ({currency})"
    return _UNIT_NAMES.get(unit, unit) if long else unit


def _slug(text: str) -> str:
    """A tag as an id: letters, digits, '-' and '_' kept, anything else as '-'."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _tag_links(tags: Iterable[str]) -> str:
    return " ".join(f'<a class="tag" href="#tag-{escape(_slug(tag))}">{escape(tag)}</a>' for tag in tags)


# Lineage graph geometry: boxes in columns, one column per layer, read left to right.
_NODE_H, _NODE_GAP, _LAYER_GAP, _CHAR_W, _PAD = 22, 8, 44, 7.3, 10
_MAX_LINEAGE_NODES = 120  # past this, the graph is summarised in words instead of drawn
_KIND_CLASS = {"kpi": "n-kpi", "source": "n-source", "column": "n-column"}


def lineage_svg(graph: Lineage) -> str:
    """The lineage of a KPI as inline SVG: its node at the left, then the KPIs it uses, the
    sources they read and the columns read there, each an outlined box (KPIs and sources link
    to their section) joined to what it is built from by a curve. Within a layer the boxes
    are ordered by the mean position of the boxes pointing at them, which keeps the curves
    from crossing much."""
    count = sum(len(layer) for layer in graph.layers)
    root = graph.layers[0][0]
    if graph.beyond or count > _MAX_LINEAGE_NODES:
        size = f"more than {graph.beyond - 1} KPIs" if graph.beyond else f"{count} nodes in {len(graph.layers)} layers"
        return f'<p class="note lineage">Lineage: {size}, too many to draw; see Uses and Sources above.</p>'
    parents: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for parent, child in graph.edges:
        parents.setdefault(child, []).append(parent)
    position: dict[tuple[str, str], int] = {}
    layers: list[list[tuple[str, str]]] = []
    for layer in graph.layers:
        ordered = sorted(layer, key=lambda node: (sum(position[p] for p in parents.get(node, []) if p in position)
                                                  / max(1, len([p for p in parents.get(node, []) if p in position]))))
        position.update((node, i) for i, node in enumerate(ordered))
        layers.append(ordered)
    widths = [max(len(node[1]) for node in layer) * _CHAR_W + 2 * _PAD for layer in layers]
    tallest = max(len(layer) for layer in layers)
    height = tallest * (_NODE_H + _NODE_GAP) - _NODE_GAP + 2 * _NODE_GAP
    width = sum(widths) + _LAYER_GAP * (len(layers) - 1) + 2
    boxes: dict[tuple[str, str], tuple[float, float, float]] = {}  # node -> (x, y, width)
    left = 1.0
    for layer, layer_width in zip(layers, widths):
        top = (height - (len(layer) * (_NODE_H + _NODE_GAP) - _NODE_GAP)) / 2
        for i, node in enumerate(layer):
            boxes[node] = (left, top + i * (_NODE_H + _NODE_GAP), layer_width)
        left += layer_width + _LAYER_GAP
    caption = f"Lineage of {root[1]}: the KPIs it uses, the sources they read and the columns read there"
    out = [f'<figure class="lineage"><svg class="lineage" data-kpi="{escape(root[1])}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
           f'aria-label="{escape(caption)}"><title>{escape(caption)}</title>']
    for parent, child in graph.edges:
        (px, py, pw), (cx, cy, _) = boxes[parent], boxes[child]
        x1, y1, x2, y2 = px + pw, py + _NODE_H / 2, cx, cy + _NODE_H / 2
        bend = (x2 - x1) / 2
        out.append(f'<path class="edge" data-from="{escape(":".join(parent))}" data-to="{escape(":".join(child))}" '
                   f'd="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>')
    for layer in layers:
        for node in layer:
            x, y, w = boxes[node]
            kind, name = node
            css = _KIND_CLASS[kind] + (" n-root" if node == root else "")
            box = (f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_NODE_H}" rx="4"/>'
                   f'<text x="{x + _PAD:.1f}" y="{y + _NODE_H / 2 + 4:.1f}">{escape(node[1])}</text>')
            tip = f"<title>{escape(kind)} {escape(name)}</title>"
            group = f'<g class="node {css}" data-node="{escape(kind + ":" + name)}">{tip}{box}</g>'
            if kind in ("kpi", "source") and node != root:
                group = f'<a href="#{kind}-{escape(name)}">{group}</a>'
            out.append(group)
    out.append("</svg>")
    out.append('<figcaption class="note">Lineage: <span class="k-kpi">KPI</span> → '
               '<span class="k-kpi">KPIs it uses</span> → <span class="k-source">sources</span> → '
               '<span class="k-column">columns read</span></figcaption></figure>')
    return "\n".join(out)


# --- the page --------------------------------------------------------------------------


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _page(title: str, body: str, script: str) -> str:
    """The HTML document around ``body``: inline style and script, allowed by hash only."""
    policy = (f"default-src 'none'; style-src {_hash(_STYLE)}; script-src {_hash(script)}; "
              "base-uri 'none'; form-action 'none'")
    return "\n".join([
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(policy, quote=False)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        body,
        f"<script>{script}</script>",
        "</body>",
        "</html>",
        "",
    ])


__all__ = ["axis_scale", "build_report", "catalog_html", "change_text", "period_label", "runs", "series_styles",
           "target_status", "tick_label", "write_html", "write_report"]


def _source_links(model: Model, names) -> set[tuple[str, str]]:
    """(name as written, the documented source it links to) of each source a KPI reads: a time
    axis's view (deals at won_at) links to its source's section."""
    return {(display_name(model.sources[name]), (model.sources[name].axis_of or (name,))[0]) for name in names}
