"""The HTML report and catalogue: values checked in plain Python, then the pages loaded in
headless Chromium (console, rendered DOM, screenshot). See tests/browser.py."""

from __future__ import annotations

import csv
import datetime as dt
import html
import math
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import BrowserSession, distinct_colours, load_page, png_rows
from kpi_engine import open_project
from kpi_engine.errors import KpiEngineError, UsageError
from kpi_engine.output import format_value
from kpi_engine.catalog import lineage, markdown
from kpi_engine.report import (PALETTE, _REPORT_SCRIPT, axis_scale, build_report, catalog_html, change_text, period_label,
                               runs, series_styles, tick_label, write_html,
                               write_report)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"
AS_OF = dt.date(2026, 1, 1)  # the latest complete month is 2025-12
LATEST, PREVIOUS = dt.date(2025, 12, 1), dt.date(2025, 11, 1)
CHECKED = ["cost_per_lead", "revenue", "mrr", "nps", "ltv_to_cac"]


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


@pytest.fixture(scope="module")
def report(project):
    """The default report: every KPI of the example project, by month."""
    return build_report(project, as_of=AS_OF)


@pytest.fixture(scope="module")
def split_report(project):
    return build_report(project, ["cost_per_lead", "revenue", "nps", "ltv_to_cac"], by="channel", as_of=AS_OF)


def card(page: str, name: str) -> str:
    """The <section> of one KPI."""
    match = re.search(rf'<section class="kpi" id="kpi-{name}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section for {name}"
    return match.group(1)


def figure(section: str, css: str) -> str:
    match = re.search(rf'<dd class="{css}[^"]*">(.*?)</dd>', section, re.DOTALL)
    assert match, f"no {css} figure"
    return html.unescape(match.group(1))


class Element:
    """An element of a parsed page: tag, attributes, children (elements and text)."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: "Element | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def find_all(self, tag: str, css: str | None = None) -> list["Element"]:
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if child.tag == tag and (css is None or css in child.attrs.get("class", "").split()):
                    found.append(child)
                found += child.find_all(tag, css)
        return found

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children if not (
            isinstance(c, Element) and c.tag in ("svg", "title")))


class _Tree(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in self.VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag):
        element = self.current
        while element is not None and element.tag != tag:
            element = element.parent
        assert element is not None, f"</{tag}> closes nothing"
        self.current = element.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(page: str) -> Element:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.current is tree.root, f"<{tree.current.tag}> is never closed"
    return tree.root


def kpi_chart(page: str, name: str) -> Element:
    """The <figure> (or small multiples) of one KPI's chart."""
    found = [e for tag in ("figure", "div") for e in parse(page).find_all(tag)
             if e.attrs.get("data-kpi") == name]
    assert len(found) == 1, f"{len(found)} charts for {name}"
    return found[0]


def subpaths(d: str) -> list[list[tuple[float, float]]]:
    """The points of each unbroken piece ("M x,y L x,y ...") of an SVG path."""
    pieces = []
    for piece in re.findall(r"M[^M]*", d):
        pieces.append([(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", piece)])
    return pieces


# --- values, in plain Python -------------------------------------------------------------


def _month(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[5:7]), 1)


def _csv(table: str) -> list[dict]:
    with open(EXAMPLE / "data" / f"{table}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def reference_values() -> dict[str, dict[dt.date, float]]:
    """cost_per_lead, revenue and nps of November and December 2025 from the CSV files."""
    values: dict[str, dict[dt.date, float]] = {"cost_per_lead": {}, "revenue": {}, "nps": {}}
    spend = _csv("ad_spend")
    leads = _csv("leads")
    orders = _csv("orders")
    answers = _csv("nps_responses")
    for month in (PREVIOUS, LATEST):
        spent = sum(float(r["spend"]) for r in spend if _month(r["spend_date"]) == month)
        created = sum(1 for r in leads if _month(r["created_at"]) == month and r["is_qualified"] == "true")
        values["cost_per_lead"][month] = spent / created
        values["revenue"][month] = sum(float(r["amount"]) for r in orders
                                       if _month(r["ordered_at"]) == month and r["status"] == "paid")
        scores = [int(r["score"]) for r in answers if _month(r["responded_at"]) == month]
        values["nps"][month] = 100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)
    return values


def expected_texts(value: float, before: float, unit: str, spec: str | None) -> tuple[str, str]:
    """The latest value and the change as the report should print them, computed here."""
    delta = value - before
    step = format_value(abs(delta), unit, "USD", spec)
    if unit == "percent":
        step = step.rstrip("%") + " pts"
    percent = f"{(value - before) / abs(before) * 100:+,.1f}%"
    return format_value(value, unit, "USD", spec), f"{'-' if delta < 0 else '+'}{step} ({percent})"


def test_latest_values_and_changes(project, report):
    model = project.model()
    from_csv = reference_values()
    for name in CHECKED:
        # Each KPI on its own, over the two months only: not the report's query.
        rows = {r["period"]: r[name] for r in project.evaluate([name], grain="month", start=PREVIOUS,
                                                                end=LATEST + dt.timedelta(days=31)).to_dicts()}
        value, before = rows[LATEST], rows[PREVIOUS]
        if name in from_csv:
            assert value == pytest.approx(from_csv[name][LATEST])
            assert before == pytest.approx(from_csv[name][PREVIOUS])
        spec = model.kpi(name).spec
        latest, change = expected_texts(value, before, spec.unit, spec.format)
        section = card(report, name)
        assert figure(section, "latest") == latest, name
        assert figure(section, "change") == change, name
        assert html.escape(spec.label) in section
        assert html.escape(" ".join(spec.description.split())) in section
        assert "2025-12" in section and "Change vs 2025-11" in section


def test_known_figures(report):
    """A few December 2025 figures written out, so a bug shared by the report and the
    expected texts above would still show."""
    assert figure(card(report, "cost_per_lead"), "latest") == "$179.18"
    assert figure(card(report, "mrr"), "latest") == "$227,320.30"
    assert figure(card(report, "ltv_to_cac"), "latest") == "5.07"
    assert "2025-12: complete before 2026-01-01" in report


def test_target_status(report):
    section = card(report, "ltv_to_cac")  # target: at least 3, and the value is 5.07
    assert "<dt>Target &gt;= 3</dt>" in section
    assert '<span class="status ok">ok</span>' in section
    assert '<span class="status' not in card(report, "mrr")  # no min/max target: no status
    assert "Goal: higher is better" in card(report, "mrr")


def test_every_kpi_by_default_in_two_queries_at_most(project, monkeypatch):
    calls = []
    evaluate = project.evaluate
    monkeypatch.setattr(project, "evaluate", lambda *a, **k: calls.append(k.get("by")) or evaluate(*a, **k))
    page = build_report(project, as_of=AS_OF)
    assert len(calls) == 1
    assert re.findall(r'<section class="kpi" id="kpi-(\w+)">', page) == list(project.project.kpis)
    calls.clear()
    build_report(project, ["cost_per_lead", "nps"], by="channel", as_of=AS_OF)
    assert calls == [None, ["channel"]]


def test_one_line_per_channel(project, split_report):
    for name in ["cost_per_lead", "revenue", "nps", "ltv_to_cac"]:
        rows = project.evaluate([name], by=["channel"], grain="month", end=AS_OF).to_dicts()
        channels = {"(null)" if r["channel"] is None else r["channel"] for r in rows if r[name] is not None}
        chart = kpi_chart(split_report, name)
        groups = chart.find_all("g", "series")
        assert len(groups) == len(channels) > 1, name
        assert all(len(g.find_all("path", "line")) == 1 for g in groups)
        assert {g.attrs["data-series"] for g in groups} == channels
        legend = chart.find_all("button", "series-toggle")  # the legend: one toggle per line
        assert [b.attrs["data-series"] for b in legend] == [g.attrs["data-series"] for g in groups]
        assert [b.text() for b in legend] == [g.attrs["data-series"] for g in groups]
        assert all(b.attrs["aria-pressed"] == "true" for b in legend)
    assert "split by channel" in split_report


def test_the_chart_covers_every_month_up_to_the_latest(report):
    section = card(report, "revenue")
    (path,) = kpi_chart(report, "revenue").find_all("path", "line")
    assert [len(run) for run in subpaths(path.attrs["d"])] == [24]  # 2024-01 .. 2025-12: the example's two years
    assert "2024-01" in section and "2025-12" in section and "2026-01" not in section


def test_self_contained(report, split_report, project):
    for page in (report, split_report, catalog_html(project.model())):
        assert not re.search(r"https?://", page, re.IGNORECASE)
        assert not re.search(r"\bsrc\s*=|@import|url\(|<link\b", page, re.IGNORECASE)
        assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
        assert page.count("<script>") == 1 and "default-src 'none'" in page
        assert "'unsafe-inline'" not in page


# --- a small project with hostile texts ---------------------------------------------------

HOSTILE = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [region]}
  visits: {table: visits, time: visited_at}
kpis:
  revenue:
    label: <script>alert("label")</script>
    description: Paid <img src=x onerror=alert(1)> & more
    unit: currency
    formula: sum(orders.amount where region != '</pre><script>')
    target: {min: 1000}
  avg_order:
    label: Average order
    formula: avg(orders.amount)
    target: {max: 400, direction: lower_is_better}
  visit_length:
    label: Average visit
    formula: avg(visits.seconds)
    target: {min: 1}
"""
ORDERS = [
    {"ordered_at": "2025-01-15", "region": "<i>eu</i>", "amount": 200},
    {"ordered_at": "2025-02-03", "region": "<i>eu</i>", "amount": 300},
    {"ordered_at": "2025-02-10", "region": "us", "amount": 500},
    {"ordered_at": "2025-02-11", "region": "us", "amount": 100},
    {"ordered_at": "2025-03-01", "region": "us", "amount": 5000},  # the current month: not shown
]
VISITS = [{"visited_at": "2025-01-20", "seconds": 30}]  # none in February: null


@pytest.fixture
def hostile(make_project):
    root = make_project({"s.yaml": HOSTILE}, {"orders": ORDERS, "visits": VISITS})
    with open_project(root) as opened:
        yield opened


def test_spec_and_data_texts_are_escaped(hostile):
    page = build_report(hostile, by="region", as_of=dt.date(2025, 3, 10))
    assert page.count("<script") == 1  # the page's own
    assert "&lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;" in page
    assert "<img" not in page and "Paid &lt;img src=x onerror=alert(1)&gt; &amp; more" in page
    assert "<i>" not in page and "&lt;i&gt;eu&lt;/i&gt;" in page  # a dimension value from the data
    catalogue = catalog_html(hostile.model())
    assert catalogue.count("<script") == 1 and "<img" not in catalogue
    assert "region != &#x27;&lt;/pre&gt;&lt;script&gt;&#x27;" in catalogue


def test_target_statuses_and_split_notes(hostile):
    page = build_report(hostile, by="region", as_of=dt.date(2025, 3, 10))
    # February 2025: revenue 900 < 1000, average order 300 <= 400, no visit.
    assert figure(card(page, "revenue"), "latest") == "$900.00"
    assert figure(card(page, "revenue"), "change") == "+$700.00 (+350.0%)"
    assert '<span class="status breached">breached</span>' in card(page, "revenue")
    assert '<span class="status ok">ok</span>' in card(page, "avg_order")
    assert '<dt>Target &lt;= 400</dt>' in card(page, "avg_order")
    assert figure(card(page, "avg_order"), "change") == "+100.00 (+50.0%)"  # unit: number
    assert 'class="change bad"' in card(page, "avg_order")  # up, and lower is better
    visits = card(page, "visit_length")
    assert '<span class="status no-data">no data</span>' in visits
    assert figure(visits, "latest") == "–" and figure(visits, "change") == "– (–)"
    assert "Not split by region" in visits and 'data-series' not in visits
    assert len(kpi_chart(page, "revenue").find_all("path", "line")) == 2


def test_bad_requests(hostile, tmp_path):
    with pytest.raises(KpiEngineError, match="sliced by 'nowhere'"):
        build_report(hostile, by="nowhere", as_of=dt.date(2025, 3, 10))
    with pytest.raises(KpiEngineError, match="unknown KPI"):
        build_report(hostile, ["revenu"], as_of=dt.date(2025, 3, 10))
    with pytest.raises(UsageError, match="grain"):
        build_report(hostile, grain="fortnight")
    with pytest.raises(UsageError, match="does not exist"):
        write_report(hostile, tmp_path / "missing" / "r.html")


def test_write_report_is_atomic_and_complete(hostile, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "report.html"
    target.write_text("old")
    assert write_report(hostile, target, grain="quarter", as_of="2025-04-02") == target
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "2025 Q1" in text
    assert [p.name for p in folder.iterdir()] == ["report.html"]  # no temporary file left
    assert target.stat().st_mode & 0o777 == 0o644  # the mode of the file it replaced
    fresh = folder / "fresh.html"
    write_html(fresh, "<!doctype html>")
    assert fresh.stat().st_mode & 0o777 == 0o644  # a page to share, not a 0600 temporary file


def test_change_and_period_texts():
    assert change_text(-5.0, -10.0, "score") == ("+5.00", "+50.0%")  # relative to |previous|
    assert change_text(-5, -10, "number") == ("+5", "+50.0%")  # whole values (values.py) show no decimals
    assert change_text(12.5, 15.0, "percent") == ("-2.5 pts", "-16.7%")
    assert change_text(1234.5, 0, "currency") == ("+$1,234.50", "–")
    assert change_text(None, 3, "count") == ("–", "–")
    assert change_text(1500, 1000, "count") == ("+500", "+50.0%")
    assert period_label(dt.date(2025, 10, 1), "quarter") == "2025 Q4"
    assert period_label(dt.date(2025, 12, 1), "month") == "2025-12"


# --- the command line ----------------------------------------------------------------------


def _cli(command: str, option: str | None = None):
    """The click group, or skip until kpi_engine/cli.py has the command (and option)."""
    from kpi_engine.cli import cli

    found = cli.commands.get(command)
    if found is None or (option and option not in {o for p in found.params for o in p.opts}):
        pytest.skip(f"kpi_engine/cli.py has no '{command}{' ' + option if option else ''}' yet")
    return cli


def test_report_command(tmp_path):
    from click.testing import CliRunner

    cli = _cli("report")
    output = tmp_path / "report.html"
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(EXAMPLE), "cost_per_lead", "nps", "--by", "channel",
                                 "--as-of", "2026-01-01", "--output", str(output)])
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert re.findall(r'<section class="kpi" id="kpi-(\w+)">', page) == ["cost_per_lead", "nps"]
    assert figure(card(page, "cost_per_lead"), "latest") == "$179.18" and "split by channel" in page
    assert runner.invoke(cli, ["report", str(EXAMPLE)]).exit_code == 2  # --output is required
    result = runner.invoke(cli, ["report", str(EXAMPLE), "--by", "nowhere", "-o", str(output)])
    assert result.exit_code == 1 and "nowhere" in result.output


def test_docs_html_command(tmp_path):
    from click.testing import CliRunner

    cli = _cli("docs", "--format")
    output = tmp_path / "catalogue.html"
    result = CliRunner().invoke(cli, ["docs", str(EXAMPLE), "--format", "html", "-o", str(output)])
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.count('<section class="kpi"') == 47


# --- the PNG reader of tests/browser.py ----------------------------------------------------


def _png(width: int, height: int, pixels: list[bytes], filters: list[int]) -> bytes:
    """An RGB PNG whose rows use the given filter types (written the way an encoder does)."""
    bpp, raw, previous = 3, b"", bytes(width * 3)
    for row, kind in zip(pixels, filters):
        out = bytearray()
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up = previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            if kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
            else:
                predictor = [0, left, up, (left + up) >> 1][kind]
            out.append((value - predictor) & 0xFF)
        raw += bytes([kind]) + bytes(out)
        previous = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_png_reader_undoes_every_filter(tmp_path):
    width = 7
    pixels = [bytes((x * 37 + y * 91 + c * 53) % 256 for x in range(width) for c in range(3)) for y in range(6)]
    path = tmp_path / "t.png"
    path.write_bytes(_png(width, 6, pixels, [0, 1, 2, 3, 4, 2]))
    assert png_rows(path) == (width, 6, 3, pixels)
    assert distinct_colours(path) == len({row[i:i + 3] for row in pixels for i in range(0, len(row), 3)})


# --- in the browser ----------------------------------------------------------------------


def _ready(console: list[str], prefix: str) -> dict[str, int]:
    found = [m for m in console if m.startswith(prefix)]
    assert len(found) == 1, console
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[0])}


def test_the_browser_helper_sees_errors(tmp_path):
    """So that 'no errors' below means something: a chart without a line, a blocked
    external load and an exception are all reported."""
    path = tmp_path / "broken.html"
    path.write_text("""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'">
</head><body><svg class="trend" data-kpi="empty"></svg><img src="https://example.invalid/x.png">
<script>""" + _REPORT_SCRIPT + """ missing();</script></body></html>""")
    page = load_page(path, tmp_path)
    assert any(m.startswith("kpi-report-error: the chart of empty has no line") for m in page.errors), page.console
    assert any("Content Security Policy" in m for m in page.errors), page.console
    assert any(m.startswith("Uncaught ReferenceError") for m in page.errors), page.console
    assert "kpi-report-ready charts=1 lines=0 toggles=0" in page.console


def test_report_in_the_browser(report, project, tmp_path):
    path = tmp_path / "report.html"
    write_html(path, report)
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors
    assert page.dom_console == page.console  # the DOM run saw the same page
    counts = _ready(page.console, "kpi-report-ready")
    assert counts["charts"] == len(project.project.kpis) == report.count('<svg class="trend"')
    assert counts["lines"] == counts["charts"]
    assert page.dom.count('<path class="line"') == counts["lines"]
    assert '<section class="kpi" id="kpi-ltv_to_cac">' in page.dom
    assert distinct_colours(page.screenshot) > 20


def test_split_report_in_the_browser(split_report, tmp_path):
    path = tmp_path / "split.html"
    write_html(path, split_report)
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors
    assert page.dom_console == page.console  # the DOM run saw the same page
    counts = _ready(page.console, "kpi-report-ready")
    assert counts["charts"] == 4
    assert counts["lines"] == split_report.count('<path class="line"') == page.dom.count('<path class="line"') > 4
    assert distinct_colours(page.screenshot) > 20


def test_catalogue_in_the_browser(project, tmp_path):
    path = tmp_path / "catalogue.html"
    write_html(path, catalog_html(project.model()))
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors  # includes a check of every #anchor link
    assert page.dom_console == page.console  # the DOM run saw the same page
    counts = _ready(page.console, "kpi-catalog-ready")
    assert counts["kpis"] == counts["lineages"] == len(project.project.kpis)
    assert counts["sources"] == page.dom.count('<section class="source"') == 15  # sources.yaml declares 15
    assert counts["links"] > 3 * counts["kpis"]  # table of contents, tags, uses, lineage boxes: all checked
    assert page.dom.count('<section class="kpi"') == len(project.project.kpis)
    assert 'href="#kpi-customer_acquisition_cost"' in page.dom  # ltv_to_cac uses it
    assert distinct_colours(page.screenshot) > 20


def test_hostile_texts_stay_text_in_the_browser(hostile, tmp_path):
    path = tmp_path / "hostile.html"
    write_html(path, build_report(hostile, by="region", as_of=dt.date(2025, 3, 10)))
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors
    assert page.dom_console == page.console  # the DOM run saw the same page
    # Two regions for each of the two KPIs with a region, one line (of one point) for visits.
    assert _ready(page.console, "kpi-report-ready") == {"charts": 3, "lines": 5, "toggles": 4}
    assert not any("label" in m for m in page.console)  # the label's script never ran
    assert '&lt;script&gt;alert("label")&lt;/script&gt;' in page.dom


# --- issue 19: gaps, colours, ticks, many series --------------------------------------------

GAPS = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [region]}
kpis:
  avg_order:
    label: Average order
    unit: currency
    formula: avg(orders.amount)
  orders_placed:
    label: Orders
    unit: count
    formula: count(orders)
"""
# January to June 2025 (the data covers them whole); no order at all in March, none from "us"
# in January, February and May.
GAP_ORDERS = [
    {"ordered_at": "2025-01-01", "region": "eu", "amount": 200},
    {"ordered_at": "2025-02-10", "region": "eu", "amount": 400},
    {"ordered_at": "2025-04-10", "region": "eu", "amount": 600},
    {"ordered_at": "2025-04-11", "region": "us", "amount": 900},
    {"ordered_at": "2025-05-10", "region": "eu", "amount": 500},
    {"ordered_at": "2025-06-10", "region": "eu", "amount": 300},
    {"ordered_at": "2025-06-30", "region": "us", "amount": 700},
]


@pytest.fixture
def gaps(make_project):
    root = make_project({"s.yaml": GAPS}, {"orders": GAP_ORDERS})
    with open_project(root) as opened:
        yield opened


def _months_with_values(rows: list[dict], region: str | None) -> list[int]:
    """Months (1-6) with at least one order of the region (any region for None), from the raw rows."""
    return sorted({int(r["ordered_at"][5:7]) for r in rows if region in (None, r["region"])})


def _runs_of(months: list[int]) -> list[list[int]]:
    found: list[list[int]] = []
    for month in months:
        if found and found[-1][-1] == month - 1:
            found[-1].append(month)
        else:
            found.append([month])
    return found


def test_lines_break_where_a_period_has_no_value(gaps):
    page = build_report(gaps, ["avg_order"], as_of=dt.date(2025, 7, 1))
    (path,) = kpi_chart(page, "avg_order").find_all("path", "line")
    pieces = subpaths(path.attrs["d"])
    # The average of March is null (no order): two pieces, Jan-Feb and Apr-Jun, nothing drawn across.
    assert [len(p) for p in pieces] == [len(r) for r in _runs_of(_months_with_values(GAP_ORDERS, None))] == [2, 3]
    step = pieces[0][1][0] - pieces[0][0][0]  # x distance of one month
    assert pieces[1][0][0] == pytest.approx(pieces[0][1][0] + 2 * step, abs=0.11)  # April sits two months on
    page = build_report(gaps, ["avg_order"], by="region", as_of=dt.date(2025, 7, 1))
    groups = {g.attrs["data-series"]: g for g in kpi_chart(page, "avg_order").find_all("g", "series")}
    for region in ("eu", "us"):
        (path,) = groups[region].find_all("path", "line")
        runs_seen = [len(p) for p in subpaths(path.attrs["d"])]
        assert runs_seen == [len(r) for r in _runs_of(_months_with_values(GAP_ORDERS, region))], region
    assert [len(p) for p in subpaths(groups["us"].find_all("path", "line")[0].attrs["d"])] == [1, 1]
    # A value between two gaps has no segment: its (larger) marker shows it.
    us_markers = groups["us"].find_all("circle")
    assert len(us_markers) == 2 and all(c.attrs["r"] == "3.5" for c in us_markers)
    assert [c.find_all("title")[0].text() for c in us_markers] == ["us, 2025-04: $900.00", "us, 2025-06: $700.00"]


def test_runs():
    axis = [dt.date(2025, m, 1) for m in range(1, 8)]
    values = {axis[0]: 1.0, axis[1]: 2.0, axis[2]: None, axis[4]: 0.0, axis[5]: 5.0}  # axis[3], axis[6] missing
    assert runs(values, axis) == [[axis[0], axis[1]], [axis[4], axis[5]]]
    assert runs({}, axis) == []


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """CIELAB (D65) of linear sRGB."""
    r, g, b = rgb
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b, 0.2126 * r + 0.7152 * g + 0.0722 * b,
           0.0193 * r + 0.1192 * g + 0.9505 * b)
    f = [(t / w) ** (1 / 3) if t / w > 0.008856 else 7.787 * t / w + 16 / 116
         for t, w in zip(xyz, (0.95047, 1.0, 1.08883))]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


# Machado, Oliveira and Fernandes (2009), severity 1.0, on linear RGB.
_VISION = {
    "normal": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                     (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}


def test_palette_colours_are_distinct_for_colour_blind_readers_too():
    linear = [tuple(_linear(int(c[i:i + 2], 16)) for i in (1, 3, 5)) for c in PALETTE]
    assert len(PALETTE) == 7
    for vision, matrix in _VISION.items():
        seen = [_lab(tuple(min(1.0, max(0.0, sum(m * v for m, v in zip(row, rgb)))) for row in matrix))
                for rgb in linear]
        closest = min(math.dist(a, b) for i, a in enumerate(seen) for b in seen[i + 1:])
        assert closest > 10, vision  # CIE76 distance: 2.3 is just noticeable; 10 is clearly apart
        assert all(lab[0] < 85 for lab in seen), vision  # none washes out on the white background


def test_a_series_keeps_its_colour_in_every_chart(split_report):
    styles = series_styles(["ppc", "email", "(null)", "content"])
    assert styles == {"content": (PALETTE[0], ""), "email": (PALETTE[1], ""), "ppc": (PALETTE[2], ""),
                      "(null)": (PALETTE[3], "")}
    many = series_styles(f"s{i:02d}" for i in range(9))
    assert many["s06"] == (PALETTE[6], "") and many["s07"] == (PALETTE[0], "6 3") and many["s08"] == (PALETTE[1], "6 3")
    colours: dict[str, set[str]] = {}
    for name in ["cost_per_lead", "revenue", "nps", "ltv_to_cac"]:
        chart = kpi_chart(split_report, name)
        strokes = {g.attrs["data-series"]: g.find_all("path", "line")[0].attrs["stroke"]
                   for g in chart.find_all("g", "series")}
        assert len(set(strokes.values())) == len(strokes), name  # no two lines of a chart alike
        for series, stroke in strokes.items():
            colours.setdefault(series, set()).add(stroke)
        legend = {b.attrs["data-series"]: b.find_all("line")[0].attrs["stroke"] for b in chart.find_all("button")}
        assert legend == strokes
    channels = sorted(c for c in colours if c != "(null)") + ["(null)"]
    assert {c: s.pop() for c, s in colours.items() if len(s) == 1} == dict(zip(channels, PALETTE))


def test_tick_labels_follow_the_unit_and_magnitude():
    assert tick_label(1_500_000, 500_000, 2_000_000, "currency") == "$1.5M"
    assert tick_label(0, 500_000, 2_000_000, "currency") == "$0"
    assert tick_label(-50_000, 50_000, 100_000, "currency") == "-$50k"  # the sign before the symbol
    assert tick_label(250_000, 50_000, 250_000, "currency", "CHF") == "250k CHF"
    assert tick_label(1_200, 200, 1_400, "currency", "EUR") == "€1,200"
    assert tick_label(-20, 20, 40, "score") == "-20"
    assert tick_label(12.5, 2.5, 15, "percent") == "12.5%"
    assert tick_label(10, 2.5, 15, "percent") == "10.0%"
    assert tick_label(7, 1, 9, "count") == "7"
    assert tick_label(0.25, 0.05, 0.35, "ratio") == "0.25"
    assert tick_label(36_000, 12_000, 48_000, "seconds") == "36,000 s"
    assert tick_label(3_000_000_000, 1_000_000_000, 4e9, "number") == "3B"
    # Ticks at round steps, the axis from the tick below the data to the one above it.
    assert axis_scale(200, 900, "currency") == ([200, 400, 600, 800, 1000], 200, 1000)
    assert axis_scale(0, 9.4, "count") == ([0, 2, 4, 6, 8, 10], 0, 10)
    assert axis_scale(1, 3, "count") == ([1, 2, 3], 1, 3)  # never 1.5 orders
    assert axis_scale(1.2, 2.1, "ratio") == ([1.2, 1.4, 1.6, 1.8, 2.0, 2.2], 1.2, 2.2)
    assert axis_scale(-12, 40, "score") == ([-20, 0, 20, 40], -20, 40)
    assert axis_scale(4, 4, "count") == ([0, 1, 2, 3, 4], 0, 4)  # a constant: from 0


def test_report_ticks_have_no_useless_decimals(report, hostile):
    labels = [t.text() for t in parse(report).find_all("text", "tick")]
    assert labels and not [label for label in labels if label.endswith(".00") or ".00 " in label]
    page = build_report(hostile, ["revenue"], as_of=dt.date(2025, 3, 10))
    # January 200, February 900: a step of 200 from 200 to 1,000 (worked out by hand).
    assert [t.text() for t in parse(page).find_all("text", "tick")] == ["$200", "$400", "$600", "$800", "$1,000"]
    counts = [t.text() for t in kpi_chart(report, "new_contacts").find_all("text", "tick")]
    assert all(re.fullmatch(r"-?[\d,]+k?", label) for label in counts), counts  # a count: whole numbers


MANY = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [store]}
kpis:
  orders_placed:
    label: Orders
    unit: count
    formula: count(orders)
"""


def _many_orders() -> list[dict]:
    """Twelve stores; store k places k orders in January and k + 1 in February, store 05 none in February."""
    rows = []
    for k in range(1, 13):
        for month, n in ((1, k), (2, 0 if k == 5 else k + 1)):
            days = [1 + i if month == 1 else 28 - i for i in range(n)]  # the data covers both months whole
            rows += [{"ordered_at": f"2025-{month:02d}-{day:02d}", "store": f"store {k:02d}"} for day in days]
    return rows


def test_many_series_become_small_multiples(make_project):
    rows = _many_orders()
    root = make_project({"s.yaml": MANY}, {"orders": rows})
    with open_project(root) as opened:
        page = build_report(opened, by="store", as_of=dt.date(2025, 3, 1))
    chart = kpi_chart(page, "orders_placed")
    assert chart.tag == "div" and chart.attrs["class"] == "multiples"
    panels = chart.find_all("figure", "multiple")
    stores = sorted({r["store"] for r in rows})
    assert [p.attrs["data-series"] for p in panels] == [p.find_all("figcaption")[0].text() for p in panels] == stores
    ticks = set()
    for panel, store in zip(panels, stores):
        (svg,) = panel.find_all("svg")
        (group,) = svg.find_all("g", "series")
        assert group.attrs["data-series"] == store
        tips = [c.find_all("title")[0].text() for c in group.find_all("circle")]
        counts = {m: sum(1 for r in rows if r["store"] == store and r["ordered_at"][5:7] == m) for m in ("01", "02")}
        assert tips == [f"{store}, 2025-{m}: {n}" for m, n in counts.items() if n], store
        ticks.add(tuple(t.text() for t in svg.find_all("text", "tick")))
    assert ticks == {("0", "5", "10", "15")}  # one scale for all: 1 to 13 orders
    assert not chart.find_all("button")
    assert "12 series: one small chart each, all on the same scale." in page
    path = root / "many.html"
    write_html(path, page)
    loaded = load_page(path, root)
    assert loaded.errors == [], loaded.errors
    assert _ready(loaded.console, "kpi-report-ready") == {"charts": 12, "lines": 12, "toggles": 0}
    assert loaded.dom.count('<figure class="multiple"') == 12
    assert distinct_colours(loaded.screenshot) > 20


# --- issue 19: the worked examples managers read ------------------------------------------

LIBRARY = Path(__file__).resolve().parent.parent / "definitions" / "marketing"
# Each worked example in the library's KPI descriptions, with its arithmetic done here.
WORKED = {
    "cost_per_lead": ("$1,000 of paid social for 20 leads is a CPL of $50.", 1000 / 20, 50),
    "lead_to_customer_rate": ("15 sales from 100 leads in Q1 is 15%.", 100 * 15 / 100, 15),
    "traffic_to_lead_rate": ("1,000 visits and 100 leads is 10%.", 100 * 100 / 1000, 10),
    "customer_acquisition_cost": ("$500,000 of spend and 5,000 customers is a CAC of $100", 500_000 / 5_000, 100),
    "cost_per_sale": ("a CPL of $100 and 5 leads per sale is $500 per sale.", 100 * 5, 500),
}


def test_worked_examples_in_descriptions_are_right(project):
    model = project.model()
    with_examples = {name for name, kpi in model.kpis.items()
                     if re.search(r"\bexample\b", kpi.spec.description or "", re.IGNORECASE)}
    assert with_examples == set(WORKED)  # a new worked example must be checked here too
    for name, (text, computed, stated) in WORKED.items():
        description = " ".join(model.kpi(name).spec.description.split())
        assert text in description, name
        assert computed == stated, name
    cac = " ".join(model.kpi("customer_acquisition_cost").spec.description.split())
    assert "CAC of $500." not in cac and "The source article printed $500 here, a division error" in cac


def test_report_and_catalogue_show_the_corrected_cac(project, tmp_path):
    from click.testing import CliRunner

    cli = _cli("docs", "--format")
    report = build_report(project, ["customer_acquisition_cost"], as_of=AS_OF)
    catalogue = tmp_path / "catalogue.html"
    assert CliRunner().invoke(cli, ["docs", str(EXAMPLE), "--format", "html", "-o", str(catalogue)]).exit_code == 0
    markdown = CliRunner().invoke(cli, ["docs", str(LIBRARY)]).stdout
    expected = ("Marketing spend divided by the customers won in the period. Watch that it does not rise month over "
                "month. Worked example: $500,000 of spend and 5,000 customers is a CAC of $100 ($500,000 / 5,000). "
                "The source article printed $500 here, a division error: a CAC of $500 would need 1,000 customers.")
    (shown,) = [p.text() for p in parse(report).find_all("p", "description")]
    assert shown == expected
    section = [s for s in parse(catalogue.read_text()).find_all("section", "kpi")
               if s.attrs["id"] == "kpi-customer_acquisition_cost"][0]
    assert [p.text() for p in section.find_all("p", "description")] == [expected]
    assert expected in markdown  # the markdown catalogue (docs/kpis.md) too


def test_the_legend_shows_and_hides_lines_in_the_browser(split_report, tmp_path):
    path = tmp_path / "split.html"
    write_html(path, split_report)
    chart = "figure.chart[data-kpi='cost_per_lead']"
    shown = (f"Array.from(document.querySelectorAll(\"{chart} g.series\"))"
             ".filter(g => getComputedStyle(g).display !== 'none').map(g => g.dataset.series).join(',')")
    with BrowserSession(window=(1200, 1400)) as browser:
        browser.navigate(path.as_uri())
        every = browser.evaluate(shown).split(",")
        assert every == [g.attrs["data-series"] for g in kpi_chart(split_report, "cost_per_lead").find_all("g", "series")]
        browser.click(f"{chart} button[data-series='email']")
        browser.click(f"{chart} button[data-series='ppc']")
        assert browser.evaluate(shown).split(",") == [s for s in every if s not in ("email", "ppc")]
        assert browser.evaluate(f"document.querySelector(\"{chart} button[data-series='email']\")"
                                ".getAttribute('aria-pressed')") == "false"
        # Only that chart: the revenue chart still shows email.
        assert browser.evaluate("getComputedStyle(document.querySelector(\"figure.chart[data-kpi='revenue'] "
                                "g.series[data-series='email']\")).display") != "none"
        shot = browser.screenshot(tmp_path / "legend.png")
        browser.click(f"{chart} button[data-series='email']")
        assert browser.evaluate(shown).split(",") == [s for s in every if s != "ppc"]
        assert browser.errors == []
    assert distinct_colours(shot) > 20


# --- issue 19: the catalogue like dbt docs -------------------------------------------------


def _yaml_kpis() -> dict[str, dict]:
    """The example project's KPIs straight from its YAML files (the library's, then its own)."""
    import yaml

    found: dict[str, dict] = {}
    for path in [*sorted(LIBRARY.glob("*.yaml")), EXAMPLE / "kpis.yaml", EXAMPLE / "kpi_engine.yaml"]:
        data = yaml.safe_load(path.read_text()) or {}
        found.update(data.get("kpis") or {})
    return found


@pytest.fixture(scope="module")
def catalogue(project):
    return catalog_html(project.model())


def test_catalogue_groups_kpis_by_tag(catalogue):
    written = _yaml_kpis()
    expected = {}
    for name, kpi in written.items():
        for tag in kpi.get("tags") or ["untagged"]:
            expected.setdefault(tag, set()).add(name)
    (section,) = parse(catalogue).find_all("section", "tags")
    groups = section.find_all("div", "tag")
    tags = [g.attrs["id"][len("tag-"):] for g in groups]
    assert tags == sorted(t for t in expected if t != "untagged") + ["untagged"]
    for group, tag in zip(groups, tags):
        names = {a.attrs["href"][len("#kpi-"):] for a in group.find_all("a")}
        assert names == expected[tag], tag
        assert group.find_all("span", "note")[0].text() == str(len(expected[tag]))
    ltv = [s for s in parse(catalogue).find_all("section", "kpi") if s.attrs["id"] == "kpi-ltv_to_cac"][0]
    assert [a.attrs["href"] for a in ltv.find_all("a", "tag")] == ["#tag-value", "#tag-cost"]  # tags: [value, cost]


def test_catalogue_documents_sources(catalogue, project):
    import yaml

    declared = yaml.safe_load((LIBRARY / "sources.yaml").read_text())["sources"]
    sections = {s.attrs["id"][len("source-"):]: s for s in parse(catalogue).find_all("section", "source")}
    assert list(sections) == list(declared)  # the library's sources, in the order written
    orders = sections["orders"]
    facts = dict(zip([d.text() for d in orders.find_all("dt")], [d.text() for d in orders.find_all("dd")]))
    # By hand from sources.yaml and the formulas: revenue sums amount where status = 'paid'; the
    # repeat customer revenue reads each customer's orders (per customer_id); both by ordered_at.
    assert facts == {"Table": "orders", "Time": "ordered_at", "Primary key": "order_id", "Dimensions": "product",
                     "Relationships": "customer_id -> customers (many-to-one)",
                     "Columns read by KPIs": "amount, customer_id, ordered_at, status",
                     "Read by": "revenue, repeat_customer_revenue",
                     "Defined in": "builtin:marketing/sources.yaml:51"}
    assert orders.find_all("strong")[0].text() == declared["orders"]["label"]
    leads = dict(zip([d.text() for d in sections["leads"].find_all("dt")],
                     [d.text() for d in sections["leads"].find_all("dd")]))
    assert leads["Extends"] == "contacts" and leads["Rows where"] == "is_qualified" and leads["Table"] == "leads"
    # Every KPI whose formula names a source aggregates over it: the "Read by" lists, from the formula texts.
    written = _yaml_kpis()
    for name, section in sections.items():
        reading = {kpi for kpi, spec in written.items()
                   if re.search(rf"\(\s*{name}\b(?!_)", " ".join(spec["formula"].split()))}
        read_by = [d for t, d in zip(section.find_all("dt"), section.find_all("dd")) if t.text() == "Read by"]
        assert {a.text() for a in (read_by[0].find_all("a") if read_by else [])} == reading, name


def test_catalogue_shows_the_currency(catalogue, make_project):
    header = parse(catalogue).find_all("header")[0]
    assert header.find_all("strong", "currency")[0].text() == "USD"
    section = [s for s in parse(catalogue).find_all("section", "kpi") if s.attrs["id"] == "kpi-revenue"][0]
    facts = dict(zip([d.text() for d in section.find_all("dt")], [d.text() for d in section.find_all("dd")]))
    assert facts["Unit"] == "currency (USD)"
    root = make_project({"s.yaml": HOSTILE}, {"orders": ORDERS, "visits": VISITS}, config=(
        "name: euro\nwarehouse: {adapter: duckdb, data: data}\ncurrency: CHF\n"))
    with open_project(root) as opened:
        model = opened.model()
        page = catalog_html(model)
        text = markdown(model)
    assert parse(page).find_all("strong", "currency")[0].text() == "CHF"
    assert "| currency (CHF) |" in text and "Amounts are in CHF." in text and "- Unit: currency (CHF)" in text


def _lineage_of(page: str, name: str) -> tuple[dict[str, tuple[float, str]], set[tuple[str, str]]]:
    """Nodes ({'kind:name': (x, css)}) and edges of a KPI's lineage graph."""
    (svg,) = [s for s in parse(page).find_all("svg", "lineage") if s.attrs["data-kpi"] == name]
    nodes = {g.attrs["data-node"]: (float(g.find_all("rect")[0].attrs["x"]), g.attrs["class"])
             for g in svg.find_all("g", "node")}
    edges = {(p.attrs["data-from"], p.attrs["data-to"]) for p in svg.find_all("path", "edge")}
    return nodes, edges


def test_catalogue_draws_each_kpis_lineage(catalogue, project):
    nodes, edges = _lineage_of(catalogue, "ltv_to_cac")
    # By hand from the library: ltv_to_cac = customer_lifetime_value / customer_acquisition_cost;
    # customer_lifetime_value = revenue / customers_won; customer_acquisition_cost = ad_spend_total /
    # customers_won; revenue = sum(orders.amount where status = 'paid'); customers_won = count(customers);
    # ad_spend_total = sum(ad_spend.spend). Each source is read by its time column too.
    assert edges == {
        ("kpi:ltv_to_cac", "kpi:customer_lifetime_value"), ("kpi:ltv_to_cac", "kpi:customer_acquisition_cost"),
        ("kpi:customer_lifetime_value", "kpi:revenue"), ("kpi:customer_lifetime_value", "kpi:customers_won"),
        ("kpi:customer_acquisition_cost", "kpi:ad_spend_total"), ("kpi:customer_acquisition_cost", "kpi:customers_won"),
        ("kpi:revenue", "source:orders"), ("kpi:customers_won", "source:customers"),
        ("kpi:ad_spend_total", "source:ad_spend"),
        ("source:orders", "column:orders.amount"), ("source:orders", "column:orders.status"),
        ("source:orders", "column:orders.ordered_at"), ("source:customers", "column:customers.acquired_at"),
        ("source:ad_spend", "column:ad_spend.spend"), ("source:ad_spend", "column:ad_spend.spend_date")}
    assert set(nodes) == {node for edge in edges for node in edge}
    x = {node: left for node, (left, _) in nodes.items()}
    # Left to right: the KPI, the KPIs it uses, the KPIs those use, sources, columns.
    layers = [["kpi:ltv_to_cac"], ["kpi:customer_lifetime_value", "kpi:customer_acquisition_cost"],
              ["kpi:revenue", "kpi:customers_won", "kpi:ad_spend_total"],
              ["source:orders", "source:customers", "source:ad_spend"],
              [n for n in nodes if n.startswith("column:")]]
    for left, right in zip(layers, layers[1:]):
        assert max(x[n] for n in left) < min(x[n] for n in right)
        assert len({x[n] for n in right}) == 1
    assert "n-root" in nodes["kpi:ltv_to_cac"][1] and "n-source" in nodes["source:orders"][1]
    # A KPI used at two depths sits right of the deeper use: roi reads revenue and ad_spend_total directly.
    every = parse(catalogue).find_all("svg", "lineage")
    assert len(every) == len(project.project.kpis)
    links = {a.attrs["href"] for svg in every for a in svg.find_all("a")}
    assert "#source-orders" in links and "#kpi-revenue" in links
    assert {link[1:] for link in links} <= {s.attrs["id"] for s in parse(catalogue).find_all("section")}


def test_lineage_places_a_kpi_right_of_its_deepest_user(make_project):
    specs = """
sources:
  orders: {table: orders, time: ordered_at}
kpis:
  base: {formula: sum(orders.amount)}
  middle: {formula: base * 2}
  top: {formula: middle + base}
"""
    root = make_project({"s.yaml": specs}, {"orders": ORDERS})
    with open_project(root) as opened:
        model = opened.model()
        graph = lineage(model, "top")
        page = catalog_html(model)
    assert graph.layers == ((("kpi", "top"),), (("kpi", "middle"),), (("kpi", "base"),), (("source", "orders"),),
                            (("column", "orders.amount"), ("column", "orders.ordered_at")))
    nodes, edges = _lineage_of(page, "top")
    assert ("kpi:top", "kpi:base") in edges and nodes["kpi:middle"][0] < nodes["kpi:base"][0]


def test_markdown_catalogue_has_tags_sources_and_currency(project):
    text = markdown(project.model())
    assert "Amounts are in USD." in text
    assert "- value: [`customer_lifetime_value`](#customer_lifetime_value), [`ltv_to_cac`](#ltv_to_cac), " \
           "[`lead_value`](#lead_value)\n" in text
    assert ("| `orders` | Orders | `orders` | `ordered_at` | [`revenue`](#revenue), "
            "[`repeat_customer_revenue`](#repeat_customer_revenue) |") in text
    assert "### Source `orders`\n\n**Orders**\n\n- Table: `orders`\n- Time: `ordered_at`\n" in text


def test_report_and_docs_commands_write_the_new_structure(make_project, tmp_path):
    """Through the command line: the gap, the ticks and the legend in the report; the tags,
    sources, currency and lineage in the HTML catalogue."""
    from click.testing import CliRunner

    cli = _cli("docs", "--format")
    runner = CliRunner()
    output = tmp_path / "r.html"
    project_dir = make_project({"s.yaml": GAPS}, {"orders": GAP_ORDERS})
    result = runner.invoke(cli, ["report", str(project_dir), "avg_order", "--by", "region", "--as-of", "2025-07-01",
                                 "-o", str(output)])
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    chart = kpi_chart(page, "avg_order")
    lines = {g.attrs["data-series"]: [len(p) for p in subpaths(g.find_all("path", "line")[0].attrs["d"])]
             for g in chart.find_all("g", "series")}
    assert lines == {"eu": [2, 3], "us": [1, 1]}  # eu: Jan-Feb, Apr-Jun; us: April and June alone
    # eu 200..600 and us 900: a step of 200 from 200 to 1,000.
    assert [t.text() for t in chart.find_all("text", "tick")] == ["$200", "$400", "$600", "$800", "$1,000"]
    assert [b.attrs["data-series"] for b in chart.find_all("button", "series-toggle")] == ["eu", "us"]
    catalogue = tmp_path / "c.html"
    result = runner.invoke(cli, ["docs", str(project_dir), "--format", "html", "-o", str(catalogue)])
    assert result.exit_code == 0, result.output
    tree = parse(catalogue.read_text(encoding="utf-8"))
    assert [div.attrs["id"] for div in tree.find_all("div", "tag")] == ["tag-untagged"]
    assert [s.attrs["id"] for s in tree.find_all("section", "source")] == ["source-orders"]
    assert tree.find_all("strong", "currency")[0].text() == "USD"
    (svg,) = [s for s in tree.find_all("svg", "lineage") if s.attrs["data-kpi"] == "avg_order"]
    assert {(p.attrs["data-from"], p.attrs["data-to"]) for p in svg.find_all("path", "edge")} == {
        ("kpi:avg_order", "source:orders"), ("source:orders", "column:orders.amount"),
        ("source:orders", "column:orders.ordered_at")}


def test_markdown_source_texts_stay_code(make_project):
    spec = """
sources:
  odd:
    sql: "select 'a`b|c<script>' as note, amount, day from t"
    time: day
    where: "amount > 0"
kpis:
  total: {formula: sum(odd.amount)}
"""
    root = make_project({"s.yaml": spec})
    with open_project(root) as opened:
        text = markdown(opened.model(describe=False))
    # A code span longer than the backtick runs inside it, '|' escaped only in the table.
    assert "| `odd` |  | `(sql)` | `day` | [`total`](#total) |" in text
    assert "- SQL: ``select 'a`b|c<script>' as note, amount, day from t``\n" in text
    assert "- Rows where: `amount > 0`\n" in text


def test_a_lineage_too_large_to_draw_is_summarised(make_project):
    kpis = "\n".join(f"  k{i}: {{formula: {'sum(orders.amount)' if i == 0 else f'k{i - 1} + 1'}}}" for i in range(130))
    root = make_project({"s.yaml": "sources:\n  orders: {table: orders, time: ordered_at}\nkpis:\n" + kpis},
                        {"orders": ORDERS})
    with open_project(root) as opened:
        model = opened.model()
        page = catalog_html(model)
        assert lineage(model, "k129", limit=120).beyond == 121
    drawn = {s.attrs["data-kpi"] for s in parse(page).find_all("svg", "lineage")}
    # k117 is built from 117 KPIs, a source and 2 columns: 121 boxes, one past the limit of 120.
    assert drawn == {f"k{i}" for i in range(117)}
    summaries = [p.text() for p in parse(page).find_all("p", "lineage")]
    assert summaries[0] == "Lineage: 121 nodes in 120 layers, too many to draw; see Uses and Sources above."
    assert summaries[-1] == "Lineage: more than 120 KPIs, too many to draw; see Uses and Sources above."
    assert len(summaries) == 130 - 117
