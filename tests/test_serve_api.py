"""The HTTP API of ``kpi-engine serve``: catalogue, explanation, queries in JSON, CSV and Arrow,
errors as JSON with their status codes, the cache, limits, CORS, probes and access logs.

Expected numbers come from tests/serve_helpers.py's plain-Python reference over the rows the
project is built from, never from the engine."""

from __future__ import annotations

import concurrent.futures
import csv
import http.client
import io
import json
import logging
import os
import time
from dataclasses import replace

import pytest
import sqlglot
from sqlglot import exp

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout  # noqa: E402
from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import CacheSettings, Limits, ServeSettings  # noqa: E402
from serve_helpers import TOKENS, bearer, make_serve_project, reference, running_server  # noqa: E402


@pytest.fixture
def project_dir(tmp_path):
    return make_serve_project(tmp_path / "shop")


@pytest.fixture
def serve(project_dir):
    """serve(**settings) -> (TestClient, KpiService); closed at the end of the test."""
    opened = []

    def start(**options):
        settings = ServeSettings(project=project_dir, **options)
        service = KpiService.open(settings)
        client = TestClient(create_app(service))
        client.__enter__()
        opened.append(client)
        return client, service

    yield start
    for client in opened:
        client.__exit__(None, None, None)


def rows_by_key(body, keys, kpi):
    return {tuple(row[k] for k in keys): row[kpi] for row in body["rows"]}


def assert_values(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value) if value is not None else actual[key] is None, key


# --- catalogue --------------------------------------------------------------------------

def test_catalogue_lists_every_kpi_with_its_definition(serve):
    client, _ = serve()
    body = client.get("/v1/kpis").json()
    kpis = {k["name"]: k for k in body["kpis"]}
    assert list(kpis) == ["lead_count", "spend", "cpl", "repeat_leads"]
    assert kpis["cpl"]["label"] == "Cost per lead" and kpis["cpl"]["unit"] == "currency"
    assert kpis["cpl"]["formula"] == "spend / lead_count"
    assert kpis["cpl"]["dimensions"] == ["channel"]
    assert "month" in kpis["cpl"]["grains"] and kpis["cpl"]["needs_grain"] is False


def test_explain_gives_the_kpi_in_words_and_its_sql(serve):
    client, _ = serve()
    body = client.get("/v1/kpis/cpl").json()
    assert body["uses"] == ["spend", "lead_count"] and body["sources"] == ["ad_spend", "leads"]
    assert "Cost per lead" in body["explanation"] and "KPI spend" in body["explanation"]
    tables = {table.name for table in sqlglot.parse_one(body["sql"], read="duckdb").find_all(exp.Table)}
    assert {"ad_spend", "leads"} <= tables  # the query that computes it, with both sources


def test_explain_of_an_unknown_kpi_is_404_with_a_suggestion(serve):
    client, _ = serve()
    response = client.get("/v1/kpis/cpll")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "unknown KPI 'cpll'."
    assert "cpl" in response.json()["error"]["hint"]


def test_dimensions_name_the_kpis_they_slice(serve):
    client, _ = serve()
    dims = client.get("/v1/dimensions").json()["dimensions"]
    assert dims == [{"name": "channel", "label": None, "description": None,
                     "kpis": ["lead_count", "spend", "cpl", "repeat_leads"]}]


# --- queries ----------------------------------------------------------------------------

def test_query_by_channel_and_month_matches_the_rows(serve):
    client, _ = serve()
    response = client.post("/v1/query", json={"kpis": ["cpl", "lead_count"], "by": ["channel"], "grain": "month",
                                              "from": "2025-01-01", "to": "2025-03-01"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(c["name"], c["role"], c["unit"]) for c in body["columns"]] == [
        ("period", "time", None), ("channel", "dimension", None), ("cpl", "kpi", "currency"),
        ("lead_count", "kpi", "count"), ("complete", "flag", None)]
    for kpi in ("cpl", "lead_count"):
        assert_values(rows_by_key(body, ["period", "channel"], kpi),
                      reference(kpi, by_channel=True, monthly=True, start="2025-01-01", end="2025-03-01"))
    assert body["row_count"] == len(body["rows"]) == 4
    assert "ad_spend" in body["sql"] and body["cached"] is False


def test_query_total_with_where_and_having(serve):
    client, _ = serve()
    body = client.post("/v1/query", json={"kpis": ["spend"], "by": ["channel"], "where": "channel != 'social'",
                                          "having": "spend > 200", "order": ["-spend"]}).json()
    # email 150, ppc 500, social left out by where: only ppc passes spend > 200.
    assert [(r["channel"], r["spend"]) for r in body["rows"]] == [("ppc", 500)]


def test_query_as_csv_by_format_and_by_accept_header(serve):
    client, _ = serve()
    request = {"kpis": ["lead_count"], "by": ["channel"], "order": ["channel"]}
    by_param = client.post("/v1/query?format=csv", json=request)
    by_accept = client.post("/v1/query", json=request, headers={"Accept": "text/csv"})
    by_field = client.post("/v1/query", json={**request, "format": "csv"})
    assert by_param.headers["content-type"].startswith("text/csv")
    assert by_param.text == by_accept.text == by_field.text
    rows = list(csv.DictReader(io.StringIO(by_param.text)))
    counts = reference("lead_count", by_channel=True)
    assert [(r["channel"], float(r["lead_count"])) for r in rows] == [(k[0], v) for k, v in sorted(counts.items())]


def test_query_as_arrow(serve):
    import pyarrow as pa

    client, _ = serve()
    response = client.post("/v1/query", json={"kpis": ["spend"], "by": ["channel"]},
                           headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    got = dict(zip(table.column("channel").to_pylist(), table.column("spend").to_pylist()))
    assert got == {k[0]: v for k, v in reference("spend", by_channel=True).items()}
    assert table.column_names == ["channel", "spend", "complete"]


# --- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("request_body, status, message", [
    ({"kpis": ["nope"]}, 422, "unknown KPI 'nope'."),
    ({"kpis": ["cpl"], "where": "channel = "}, 422, "formula syntax error"),
    ({"kpis": ["cpl"], "by": ["region"]}, 422, "cannot slice by 'region'"),
    ({"kpis": ["cpl"], "from": "2025-03-01", "to": "2025-01-01"}, 422, "the time range is empty"),
    ({"kpis": []}, 422, "nothing to compute."),
    ({"kpis": "cpl"}, 422, "kpis: Input should be a valid list"),
    ({"kpis": ["cpl"], "from": 1735689600}, 422, "from: Value error, write dates as YYYY-MM-DD"),
    ({"kpis": ["cpl"], "grain": "fortnight"}, 422, "unknown time grain 'fortnight'"),  # checked by the project (its granularities)
    ({"kpis": ["cpl"], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
])
def test_bad_requests_get_json_errors(serve, request_body, status, message):
    client, _ = serve()
    response = client.post("/v1/query", json=request_body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert set(error) == {"message", "location", "hint", "detail", "problems"}


def test_a_formula_error_keeps_its_location_and_caret(serve):
    client, _ = serve()
    error = client.post("/v1/query", json={"formulas": ["sum(ad_spend.spend) / count(leadz)"]}).json()["error"]
    assert error["location"] == "formula" and "leadz" in error["message"]
    assert error["hint"] and "leads" in error["hint"]


@pytest.mark.parametrize("raised, status", [(QueryTimeout, 504), (ConnectionFailed, 503), (QueryFailed, 502)])
def test_warehouse_errors_map_to_gateway_statuses(serve, monkeypatch, raised, status):
    client, service = serve()

    def failing(*args, **kwargs):
        raise raised("the warehouse said no.", None, "Try again.")

    monkeypatch.setattr(service.project, "evaluate", failing)
    response = client.post("/v1/query", json={"kpis": ["spend"]})
    assert response.status_code == status
    assert response.json()["error"] == {"message": "the warehouse said no.", "location": None, "hint": "Try again.",
                                        "detail": None, "problems": []}


def test_unknown_route_is_a_json_404(serve):
    client, _ = serve()
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["message"] == "Not Found"


# --- limits -----------------------------------------------------------------------------

def test_request_body_over_the_limit_is_413(serve):
    client, _ = serve(limits=Limits(max_body_bytes=1000))
    response = client.post("/v1/query", content=json.dumps({"kpis": ["spend"], "where": "x" * 2000}),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than 1,000 bytes" in response.json()["error"]["message"]


def test_answers_over_the_row_limit_are_refused_not_cut(serve):
    client, _ = serve(limits=Limits(max_rows=3))
    request = {"kpis": ["lead_count"], "by": ["channel"], "grain": "month"}  # 6 rows
    response = client.post("/v1/query", json=request)
    assert response.status_code == 413 and "more than 3 rows" in response.json()["error"]["message"]
    assert client.post("/v1/query", json={**request, "limit": 4}).status_code == 413
    limited = client.post("/v1/query", json={**request, "limit": 3, "order": ["period", "channel"]})
    assert limited.status_code == 200 and limited.json()["row_count"] == 3


def test_too_many_kpis_and_too_long_filters_are_refused(serve):
    client, _ = serve(limits=Limits(max_kpis=2, max_text=30))
    assert client.post("/v1/query", json={"kpis": ["spend", "cpl", "lead_count"]}).status_code == 413
    response = client.post("/v1/query", json={"kpis": ["spend"], "where": "channel in ('a', 'b', 'c', 'd', 'e')"})
    assert response.status_code == 413 and "--where is 36 characters" in response.json()["error"]["message"]


def test_query_timeout_is_passed_to_the_warehouse(project_dir):
    service = KpiService.open(ServeSettings(project=project_dir, limits=Limits(query_timeout=7.5)))
    try:
        assert service.project.timeout == 7.5
    finally:
        service.close()


# --- cache ------------------------------------------------------------------------------

def test_the_second_identical_request_comes_from_the_cache(serve):
    client, _ = serve()
    request = {"kpis": ["cpl"], "by": ["channel"]}
    first, second = client.post("/v1/query", json=request), client.post("/v1/query", json=request)
    assert first.headers["X-KPI-Cache"] == "miss" and first.json()["cached"] is False
    assert second.headers["X-KPI-Cache"] == "hit" and second.json()["cached"] is True
    assert second.json()["rows"] == first.json()["rows"]
    other = client.post("/v1/query", json={**request, "where": "channel = 'ppc'"})
    assert other.headers["X-KPI-Cache"] == "miss"


def test_new_data_is_never_answered_from_the_cache(serve, project_dir):
    client, _ = serve(cache=CacheSettings(freshness_interval=0))
    request = {"kpis": ["lead_count"]}
    assert client.post("/v1/query", json=request).json()["rows"][0]["lead_count"] == 7
    with open(project_dir / "data" / "leads.csv", "a") as handle:  # a load adds a later day
        handle.write("8,2025-03-04 10:00:00,email,f\r\n")  # the csv module wrote \r\n
    response = client.post("/v1/query", json=request)
    assert response.headers["X-KPI-Cache"] == "miss" and response.json()["rows"][0]["lead_count"] == 8


def test_the_refresh_signal_renews_answers_at_once(serve, project_dir, tmp_path):
    signal = tmp_path / "loaded"
    client, _ = serve(cache=CacheSettings(freshness_interval=3600, refresh_signal=signal))
    request = {"kpis": ["spend"]}
    assert client.post("/v1/query", json=request).json()["rows"][0]["spend"] == 720
    with open(project_dir / "data" / "ad_spend.csv", "a") as handle:  # a correction inside an old day
        handle.write("2025-01-02,email,5\r\n")
    assert client.post("/v1/query", json=request).headers["X-KPI-Cache"] == "hit"  # nothing said it changed
    signal.touch()
    response = client.post("/v1/query", json=request)
    assert response.headers["X-KPI-Cache"] == "miss" and response.json()["rows"][0]["spend"] == 725


def test_concurrent_identical_requests_run_the_warehouse_once(project_dir):
    """Eight clients over real sockets ask the same question at once: one main query runs."""
    service = KpiService.open(ServeSettings(project=project_dir))
    service.ready()  # describe the warehouse first, so only query traffic is counted
    connection = service.project.connection()
    real_execute = connection.execute
    main_queries = []

    def counting(query):
        text = query.sql() if hasattr(query, "sql") else str(query)
        if '"cpl"' in text:
            main_queries.append(text)
            time.sleep(0.5)  # long enough for every client to arrive while it runs
        return real_execute(query)

    connection.execute = counting
    body = json.dumps({"kpis": ["cpl"], "by": ["channel"], "grain": "month"})

    def ask(url):
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("POST", "/v1/query", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("X-KPI-Cache"), json.loads(response.read())

    with running_server(create_app(service)) as url:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: ask(url), range(8)))
    assert len(main_queries) == 1
    assert all(status == 200 for status, _, _ in answers)
    assert sorted(cache for _, cache, _ in answers).count("miss") == 1
    assert {json.dumps(body["rows"]) for _, _, body in answers} == {json.dumps(answers[0][2]["rows"])}
    assert_values(rows_by_key(answers[0][2], ["period", "channel"], "cpl"),
                  reference("cpl", by_channel=True, monthly=True))


# --- access -----------------------------------------------------------------------------

def test_without_a_token_the_api_answers_401(serve):
    client, _ = serve(tokens=TOKENS)
    for response in (client.get("/v1/kpis"), client.post("/v1/query", json={"kpis": ["spend"]}),
                     client.get("/v1/kpis", headers={"Authorization": "Bearer wrong-secret-0123456789"}),
                     client.get("/v1/kpis", headers={"Authorization": "Basic abc"})):
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert "token" in response.json()["error"]["message"]
    assert client.get("/v1/kpis", headers=bearer("admin")).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/v1/info").json()["auth"] is True


def test_a_hashed_token_works_like_the_secret(serve):
    import hashlib

    secret = "hashed-secret-0123456789"
    tokens = json.dumps([{"name": "ops", "sha256": hashlib.sha256(secret.encode()).hexdigest()}])
    client, _ = serve(tokens=tokens)
    assert client.get("/v1/kpis", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_tokens_file_and_environment_are_both_read(serve, tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - name: file-token\n    token: file-secret-0123456789\n")
    client, service = serve(tokens=TOKENS, tokens_file=path)
    assert client.get("/v1/kpis", headers={"Authorization": "Bearer file-secret-0123456789"}).status_code == 200
    assert client.get("/v1/kpis", headers=bearer("limited")).status_code == 200
    assert len(service.tokens.accesses) == 5


# --- operation --------------------------------------------------------------------------

def test_access_log_is_one_json_line_per_request_without_secrets(serve, caplog):
    client, _ = serve(tokens=TOKENS)
    caplog.set_level(logging.INFO, logger="kpi_engine.access")
    response = client.post("/v1/query", json={"kpis": ["lead_count"]}, headers=bearer("agency"))
    assert response.status_code == 200
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "kpi_engine.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"], line["token"], line["cache"], line["rows"]) == (
        "POST", "/v1/query", 200, "agency", "miss", 1)
    assert line["request_id"] == response.headers["X-Request-ID"] and line["duration_ms"] >= 0
    assert "secret" not in caplog.text


def test_cors_allows_only_the_configured_origins(serve):
    client, _ = serve(cors_origins=("https://dash.example.com",))
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = client.options("/v1/query", headers={"Origin": "https://dash.example.com", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"
    other = client.options("/v1/query", headers={"Origin": "https://evil.example.com", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_readyz_says_503_when_the_warehouse_cannot_be_opened(serve, tmp_path):
    client, _ = serve(warehouse=f"duckdb:///{tmp_path}/missing-folder/warehouse.duckdb")
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["message"]


def test_readyz_is_ready_with_a_working_warehouse(serve):
    client, _ = serve()
    assert client.get("/readyz").json() == {"status": "ready"}


def test_openapi_describes_the_versioned_api(serve):
    client, _ = serve()
    schema = client.get("/openapi.json").json()
    assert {"/v1/kpis", "/v1/kpis/{name}", "/v1/dimensions", "/v1/query", "/healthz", "/readyz"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["QueryRequest"]["properties"]
    assert {"kpis", "formulas", "by", "grain", "from", "to", "where", "having", "order", "limit", "fill",
            "complete_only"} <= set(body)


def test_serving_everything_to_the_network_needs_tokens_or_allow_open(project_dir):
    from kpi_engine.errors import UsageError
    from kpi_engine.serve.command import check_exposure

    open_lan = ServeSettings(project=project_dir, host="0.0.0.0")
    with pytest.raises(UsageError, match="no API token is configured"):
        check_exposure(open_lan, tokens_configured=False)
    check_exposure(open_lan, tokens_configured=True)
    check_exposure(replace(open_lan, allow_open=True), tokens_configured=False)
    check_exposure(replace(open_lan, host="127.0.0.1"), tokens_configured=False)


def test_serve_command_refuses_a_bad_tokens_file_with_one_paragraph(project_dir, tmp_path):
    from click.testing import CliRunner

    from kpi_engine.cli import cli

    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens:\n  - name: x\n    token: short\n")
    result = CliRunner().invoke(cli, ["serve", str(project_dir), "--tokens-file", str(bad)],
                                env={k: v for k, v in os.environ.items() if not k.startswith("KPI_ENGINE_")})
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "shorter than 16 characters" in result.output
    assert "Traceback" not in result.output


def test_cached_answers_do_not_wait_for_a_busy_warehouse(project_dir, monkeypatch):
    """With one warehouse slot held by a slow query, a cached answer still comes back at once."""
    import threading

    service = KpiService.open(ServeSettings(project=project_dir, limits=Limits(concurrent_queries=1)))
    cached = json.dumps({"kpis": ["spend"]})
    real, release, busy = service.project.evaluate, threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        if kwargs.get("by"):  # the uncached request below
            busy.set()
            assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.project, "evaluate", slow)

    def post(url, body):
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("POST", "/v1/query", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("X-KPI-Cache"), json.loads(response.read())

    with running_server(create_app(service)) as url:
        assert post(url, cached)[1] == "miss"
        slow_answer = {}
        worker = threading.Thread(target=lambda: slow_answer.update(
            result=post(url, json.dumps({"kpis": ["spend"], "by": ["channel"]}))))
        worker.start()
        assert busy.wait(30)
        status, cache, body = post(url, cached)  # the only warehouse slot is taken
        assert (status, cache, body["rows"][0]["spend"]) == (200, "hit", 720)
        assert worker.is_alive()
        release.set()
        worker.join(30)
    assert slow_answer["result"][0] == 200


def test_a_bug_is_a_json_500_without_a_traceback(project_dir, monkeypatch, caplog):
    service = KpiService.open(ServeSettings(project=project_dir))
    caplog.set_level(logging.ERROR, logger="kpi_engine.serve")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "query", broken)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        response = client.post("/v1/query", json={"kpis": ["spend"]})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal error: the server could not answer."
    assert "secret internals" not in response.text and "Traceback" not in response.text
    [record] = [r for r in caplog.records if r.name == "kpi_engine.serve"]  # the details go to the log
    assert record.getMessage() == "unexpected error on POST /v1/query" and record.exc_info[0] is RuntimeError


def test_server_messages_are_json_lines_with_the_traceback():
    from kpi_engine.serve.middleware import _JsonLines

    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        import sys

        record = logging.LogRecord("kpi_engine.serve", logging.ERROR, __file__, 1, "failed on %s", ("/v1/query",),
                                   sys.exc_info())
    line = json.loads(_JsonLines().format(record))
    assert (line["level"], line["message"]) == ("error", "failed on /v1/query")
    assert line["exception"].splitlines()[-1] == "ZeroDivisionError: division by zero"
