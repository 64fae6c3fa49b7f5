"""Property-based tests of the HTTP API.

1. Schemathesis generates requests from the OpenAPI schema at /openapi.json (any shape the
   schema allows): no answer is a 500, and every answer conforms to the schema.
2. Hypothesis generates realistic query requests (the project's KPIs and dimensions, grains,
   ranges, filters, some invalid): whenever the API answers 200 its rows equal
   ``project.evaluate`` for the same request on a separate project object; whenever it refuses,
   ``evaluate`` refuses too, with the same message.
Both are bounded (max_examples) to run in well under a minute."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kpi_engine import open_project  # noqa: E402
from kpi_engine.errors import KpiEngineError  # noqa: E402
from kpi_engine.output import _json_value  # noqa: E402
from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import Limits, ServeSettings  # noqa: E402
from serve_helpers import make_serve_project  # noqa: E402

LIMITS = Limits(max_rows=200)


# Schemathesis reads the schema when the module is collected (its lazy fixture loader does not
# support pytest 9), so the project and the app are made here, in a folder removed at exit.
_FOLDER = Path(tempfile.mkdtemp(prefix="kpi-engine-properties-"))
atexit.register(shutil.rmtree, _FOLDER, True)
PROJECT = make_serve_project(_FOLDER / "shop")
APP = create_app(KpiService.open(ServeSettings(project=PROJECT, limits=LIMITS)))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_500(case):
    from schemathesis.specs.openapi import checks

    response = case.call()
    assert response.status_code != 500, response.text[:2000]
    excluded = []
    if case.method == "POST":
        # A request the schema allows may still name KPIs or dimensions the project lacks: a 422
        # by design, which the schema cannot express.
        excluded.append(checks.positive_data_acceptance)
    if response.status_code == 413:  # a body over the server's size limit: refused before it is read
        excluded.append(checks.negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)


# --- answers equal evaluate ---------------------------------------------------------------

DAYS = ["2024-12-20", "2025-01-01", "2025-01-15", "2025-02-01", "2025-02-11", "2025-03-01", "2025-03-02",
        "2025-04-01"]
WHERES = st.sampled_from([None, "channel = 'email'", "channel in ('ppc', 'social')", "channel != 'ppc'",
                          "channel = 'email' or channel = 'ppc'"])
HAVINGS = st.sampled_from([None, "lead_count > 1", "spend >= 100", "cpl < 200"])
FORMULAS = st.sampled_from(["spend / lead_count", "count(leads where channel = 'ppc')", "sum(ad_spend.spend) * 2",
                            "cumulative(lead_count)"])
# One mistake in about one request of five: each must be refused the same way by both.
MISTAKES = {"kpis": ["nope"], "formulas": ["count(leadz)"], "where": "channel = ", "having": "nope > 1",
            "by": ["region"], "to": DAYS[0]}


@st.composite
def query_requests(draw):
    request = {"kpis": draw(st.lists(st.sampled_from(["lead_count", "spend", "cpl", "repeat_leads"]), min_size=1,
                                     max_size=3, unique=True))}
    if draw(st.integers(0, 3)) == 0:
        request["formulas"] = draw(st.lists(FORMULAS, min_size=1, max_size=2, unique=True))
    if draw(st.booleans()):
        request["by"] = ["channel"]
    grain = draw(st.sampled_from([None, "month", "week", "quarter", "day", "fiscal_year"]))
    if grain:
        request["grain"] = grain
    first, last = sorted(draw(st.lists(st.integers(0, len(DAYS) - 1), min_size=2, max_size=2, unique=True)))
    if draw(st.booleans()):
        request["from"] = DAYS[first]
    if draw(st.booleans()):
        request["to"] = DAYS[last]
    for field, values in (("where", WHERES), ("having", HAVINGS)):
        value = draw(values)
        if value:
            request[field] = value
    keys = (["period"] if grain else []) + request.get("by", [])
    if draw(st.booleans()):
        first = draw(st.sampled_from(keys + request["kpis"]))
        request["order"] = [draw(st.sampled_from(["", "-"])) + first]
    if draw(st.booleans()):  # a limit under an order that ties may keep either row: order by every key too
        request["limit"] = draw(st.integers(0, 5))
        request["order"] = request.get("order", []) + [k for k in keys if k not in request.get("order", [])]
    request["fill"] = bool(grain and "from" in request and "to" in request and draw(st.booleans()))
    request["complete_only"] = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        field, value = draw(st.sampled_from(sorted(MISTAKES.items())))
        request[field] = value
    return request


@pytest.fixture(scope="module")
def reference_project():
    with open_project(PROJECT) as project:
        yield project


@pytest.fixture(scope="module")
def client():
    with TestClient(APP) as test_client:
        yield test_client


def evaluate(project, request):
    """``project.evaluate`` for an API request body: (rows as the API writes them, or the error message)."""
    try:
        result = project.evaluate(request["kpis"], by=request.get("by", []), grain=request.get("grain"),
                                  start=request.get("from"), end=request.get("to"), where=request.get("where"),
                                  having=request.get("having"), order_by=request.get("order", []),
                                  limit=request.get("limit"), formulas=request.get("formulas", []),
                                  fill=request["fill"], complete_only=request["complete_only"])
    except KpiEngineError as error:
        return None, error.message
    return [{k: _json_value(v) for k, v in row.items()} for row in result.to_dicts()], None


@given(request=query_requests())
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_equal_evaluate_for_the_same_request(client, reference_project, request):
    response = client.post("/v1/query", json=request)
    assert response.status_code != 500, response.text
    rows, message = evaluate(reference_project, request)
    if response.status_code == 200:
        assert message is None, f"the API answered where evaluate refused: {message}"
        answer, expected = response.json(), json.loads(json.dumps(rows))
        ordered = "limit" in request  # then the order covers every key: one right order
        if ordered:
            assert answer["rows"] == expected, request
        else:  # rows tied under the order (or without one) may come in either order
            assert sorted(map(json.dumps, answer["rows"])) == sorted(map(json.dumps, expected)), request
        assert answer["row_count"] == len(rows)
    elif response.status_code == 413:  # the server's row limit, which evaluate does not have
        assert message is not None or len(rows) > LIMITS.max_rows, response.text
    else:
        assert message is not None, f"the API refused ({response.text}) where evaluate answered"
        assert response.status_code in (400, 422)
        refused = response.json()["error"]
        assert refused["message"] == message or any(p["message"] == message for p in refused["problems"])
