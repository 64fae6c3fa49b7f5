"""The HTML report and catalogue: values checked in plain Python, then the pages loaded in
headless Chromium (console, rendered DOM, screenshot). See tests/browser.py."""

from __future__ import annotations

import csv
import datetime as dt
import html
import re
import struct
import zlib
from pathlib import Path

import pytest

from browser import distinct_colours, load_page, png_rows
from kpi_engine import open_project
from kpi_engine.errors import KpiEngineError, UsageError
from kpi_engine.output import format_value
from kpi_engine.report import (_REPORT_SCRIPT, build_report, catalog_html, change_text, period_label, write_html,
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
        section = card(split_report, name)
        lines = re.findall(r"<polyline [^>]*>", section)
        assert len(lines) == len(channels) > 1, name
        assert {html.unescape(s) for s in re.findall(r'data-series="([^"]*)"', section)} == channels
        for channel in channels:
            assert "<li><svg" in section and f"</svg>{html.escape(channel)}</li>" in section  # the legend
    assert "split by channel" in split_report


def test_the_chart_covers_every_month_up_to_the_latest(report):
    section = card(report, "revenue")
    points = re.search(r'<polyline points="([^"]*)"', section).group(1).split()
    assert len(points) == 24  # 2024-01 .. 2025-12: the example's two years
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
    assert len(re.findall(r"<polyline ", card(page, "revenue"))) == 2


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
    assert page.startswith("<!doctype html>") and page.count('<section class="kpi"') == 46


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
    assert "kpi-report-ready charts=1 lines=0" in page.console


def test_report_in_the_browser(report, project, tmp_path):
    path = tmp_path / "report.html"
    write_html(path, report)
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors
    assert page.dom_console == page.console  # the DOM run saw the same page
    counts = _ready(page.console, "kpi-report-ready")
    assert counts["charts"] == len(project.project.kpis) == report.count('<svg class="trend"')
    assert counts["lines"] == counts["charts"]
    assert page.dom.count("<polyline") == counts["lines"]
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
    assert counts["lines"] == split_report.count("<polyline ") == page.dom.count("<polyline") > 4
    assert distinct_colours(page.screenshot) > 20


def test_catalogue_in_the_browser(project, tmp_path):
    path = tmp_path / "catalogue.html"
    write_html(path, catalog_html(project.model()))
    page = load_page(path, tmp_path)
    assert page.errors == [], page.errors  # includes a check of every #anchor link
    assert page.dom_console == page.console  # the DOM run saw the same page
    assert _ready(page.console, "kpi-catalog-ready")["kpis"] == len(project.project.kpis)
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
    assert _ready(page.console, "kpi-report-ready") == {"charts": 3, "lines": 5}
    assert not any("label" in m for m in page.console)  # the label's script never ran
    assert '&lt;script&gt;alert("label")&lt;/script&gt;' in page.dom
