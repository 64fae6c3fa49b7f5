"""The explorer page at /, clicked through in headless Chromium (real mouse events through the
DevTools protocol, see tests/browser.py) against `serve` on 127.0.0.1 with API tokens: what the
agency token may not read never reaches the page. Screenshots go to tmp_path (and to
$KPI_ENGINE_SCREENSHOTS when set, to look at them)."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from browser import BrowserSession, distinct_colours  # noqa: E402
from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import ServeSettings  # noqa: E402
from serve_helpers import SECRETS, TOKENS, make_serve_project, reference, running_server  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    project = make_serve_project(tmp_path_factory.mktemp("explorer") / "shop")
    service = KpiService.open(ServeSettings(project=project, tokens=TOKENS))
    with running_server(create_app(service)) as base:
        yield base


def keep(path: Path) -> Path:
    folder = os.environ.get("KPI_ENGINE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)
    return path


TABLE = """Array.from(document.querySelectorAll('#table tbody tr')).map(tr =>
    Array.from(tr.cells).map(td => td.textContent))"""


def sign_in(browser, url, token):
    browser.navigate(url + "/")
    browser.wait_for("document.getElementById('token-box').classList.contains('shown')")
    assert "needs an API token" in browser.evaluate("document.getElementById('status').textContent")
    browser.type("#token", SECRETS[token])
    browser.click("#token-use")
    browser.wait_for("document.querySelectorAll('#kpi-list input').length > 0")


def tick(browser, group, value):
    browser.click(f"#{group} input[value='{value}']")


def test_a_manager_picks_kpis_and_sees_chart_table_sql_and_csv(url, tmp_path):
    with BrowserSession(window=(1280, 1100)) as browser:
        sign_in(browser, url, "agency")
        kpis = browser.evaluate("Array.from(document.querySelectorAll('#kpi-list input')).map(i => i.value)")
        assert kpis == ["lead_count", "spend", "cpl"]  # repeat_leads: the row policy cannot filter it

        tick(browser, "kpi-list", "cpl")
        tick(browser, "kpi-list", "lead_count")
        browser.wait_for("!document.querySelector('#dim-list input[value=channel]').disabled")
        tick(browser, "dim-list", "channel")
        assert browser.evaluate("document.getElementById('grain').value") == "month"
        browser.click("#run")
        browser.wait_for("document.body.dataset.answered === '1'")

        rows = browser.evaluate(TABLE)
        headers = browser.evaluate("Array.from(document.querySelectorAll('#table th')).map(th => th.textContent)")
        assert headers == ["month", "channel", "Leads", "Cost per lead", "status"]  # in the list's order
        assert {row[1] for row in rows} == {"email"}  # the token's row policy
        expected = reference("lead_count", by_channel=True, monthly=True, channels={"email"})
        assert {(row[0], row[1]): float(row[2]) for row in rows} == expected
        assert browser.evaluate("document.querySelectorAll('#chart svg circle').length") == len(rows)
        partial_rows = [row for row in rows if row[4] == "partial"]
        assert browser.evaluate("document.querySelectorAll('#chart svg circle.partial').length") == len(partial_rows)
        assert "email" in browser.evaluate("document.getElementById('sql').textContent")

        browser.click("#download")
        size = int(browser.wait_for("document.body.dataset.downloaded"))
        assert size > 20

        shot = keep(browser.screenshot(tmp_path / "explorer-agency.png"))
        assert distinct_colours(shot) > 20
        assert browser.errors == []


def test_the_page_shows_the_apis_error_with_its_hint(url, tmp_path):
    with BrowserSession() as browser:
        sign_in(browser, url, "admin")
        tick(browser, "kpi-list", "spend")
        # Typed dates in a date field depend on the locale: set them as a date picker would.
        browser.evaluate("document.getElementById('from').value = '2025-03-01';"
                         "document.getElementById('to').value = '2025-01-01'")
        browser.click("#run")
        browser.wait_for("document.body.dataset.failed === '1'")
        error = browser.evaluate("document.getElementById('error').textContent")
        assert "the time range is empty" in error and "pick a later --to" in error
        keep(browser.screenshot(tmp_path / "explorer-error.png"))
        # Chromium logs the refused request itself; nothing else went wrong.
        assert [e for e in browser.errors if "status of 422" not in e] == []


def test_a_wrong_token_is_refused_and_nothing_is_listed(url):
    with BrowserSession() as browser:
        browser.navigate(url + "/")
        browser.wait_for("document.getElementById('token-box').classList.contains('shown')")
        browser.type("#token", "not-a-token-0123456789")
        browser.click("#token-use")
        browser.wait_for("document.getElementById('error').classList.contains('shown')")
        assert "the API token is not valid" in browser.evaluate("document.getElementById('error').textContent")
        assert browser.evaluate("document.querySelectorAll('#kpi-list input').length") == 0


def test_the_csv_download_is_the_same_answer(url):
    """The bytes the Download button fetches are the API's CSV for the request on screen."""
    import http.client
    import json

    with BrowserSession() as browser:
        sign_in(browser, url, "agency")
        tick(browser, "kpi-list", "spend")
        browser.click("#grain")
        browser.evaluate("document.getElementById('grain').value = ''")  # whole range: one total per split
        tick(browser, "dim-list", "channel")
        browser.click("#run")
        browser.wait_for("document.body.dataset.answered === '1'")
        request = browser.evaluate("JSON.stringify(state.request)")
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/query?format=csv", request,
                 {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['agency']}"})
    rows = list(csv.DictReader(io.StringIO(conn.getresponse().read().decode())))
    assert json.loads(request) == {"kpis": ["spend"], "by": ["channel"]}
    assert [(r["channel"], float(r["spend"])) for r in rows] == [("email", 150.0)]
