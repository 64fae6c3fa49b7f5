"""Tokens, KPI allowlists and row policies: a forbidden KPI or row cannot be read through the
API (the MCP tools and the explorer are tested in test_serve_mcp.py and test_serve_explorer.py).
Expected numbers come from serve_helpers.reference over the project's rows."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from kpi_engine.errors import UsageError  # noqa: E402
from kpi_engine.serve.access import Access, Forbidden, load_tokens  # noqa: E402
from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import ServeSettings  # noqa: E402
from serve_helpers import TOKENS, bearer, make_serve_project, reference  # noqa: E402

EMAIL = {"email"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    project = make_serve_project(tmp_path_factory.mktemp("access") / "shop")
    service = KpiService.open(ServeSettings(project=project, tokens=TOKENS))
    with TestClient(create_app(service)) as test_client:
        yield test_client


def query(client, token, **body):
    return client.post("/v1/query", json=body, headers=bearer(token))


def values(response, kpi, keys=("channel",)):
    assert response.status_code == 200, response.text
    return {tuple(row[k] for k in keys): row[kpi] for row in response.json()["rows"]}


# --- KPI allowlists ---------------------------------------------------------------------

def test_the_catalogue_shows_only_the_allowed_kpis(client):
    assert [k["name"] for k in client.get("/v1/kpis", headers=bearer("limited")).json()["kpis"]] == ["lead_count"]
    assert [k["name"] for k in client.get("/v1/kpis", headers=bearer("admin")).json()["kpis"]] == [
        "lead_count", "spend", "cpl", "repeat_leads"]
    dims = client.get("/v1/dimensions", headers=bearer("limited")).json()["dimensions"]
    assert dims[0]["kpis"] == ["lead_count"]


def test_a_kpi_outside_the_allowlist_is_403_known_or_not(client):
    for name in ("spend", "no_such_kpi"):
        response = query(client, "limited", kpis=[name])
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["message"] == f"the KPI '{name}' is not allowed for the token 'limited'."
        assert error["hint"] == "This token may read: lead_count."
    assert client.get("/v1/kpis/spend", headers=bearer("limited")).status_code == 403


def test_ad_hoc_formulas_need_permission(client):
    response = query(client, "limited", formulas=["sum(ad_spend.spend)"])
    assert response.status_code == 403 and "may not send ad-hoc formulas" in response.json()["error"]["message"]
    # A formula that only names allowed KPIs reads nothing beyond them, yet still needs the permission.
    assert query(client, "limited", formulas=["lead_count * 2"]).status_code == 200


def test_a_formula_cannot_reach_a_forbidden_kpi_through_a_reference(client):
    response = query(client, "limited", formulas=["cpl + 0"])
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "the formula uses the KPI 'cpl', which is not allowed for the token 'limited'.")


def test_a_named_formula_is_checked_as_its_formula(client):
    response = query(client, "limited", formulas=["hidden=cpl + 0"])
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "the formula 'hidden' uses the KPI 'cpl', which is not allowed for the token 'limited'.")
    allowed = query(client, "limited", formulas=["doubled=lead_count * 2"])
    assert allowed.status_code == 200 and [c["name"] for c in allowed.json()["columns"]] == ["doubled", "complete"]


def test_a_composer_token_combines_its_kpis_but_reads_no_other_source(client):
    ok = query(client, "composer", formulas=["spend / lead_count", "sum(ad_spend.spend)"], by=["channel"])
    expected = reference("cpl", by_channel=True)
    assert {k: v for k, v in values(ok, "formula").items()} == pytest.approx(expected)
    assert query(client, "composer", formulas=["cpl"]).status_code == 403


def test_having_cannot_filter_on_a_forbidden_kpi(client):
    response = query(client, "limited", kpis=["lead_count"], by=["channel"], having="cpl > 100")
    assert response.status_code == 403 and "KPI 'cpl'" in response.json()["error"]["message"]
    response = query(client, "limited", kpis=["lead_count"], by=["channel"], having="sum(ad_spend.spend) > 100")
    assert response.status_code == 403


# --- row policies -----------------------------------------------------------------------

def test_the_row_policy_filters_every_answer(client):
    for kpi in ("lead_count", "spend", "cpl"):
        got = values(query(client, "agency", kpis=[kpi], by=["channel"]), kpi)
        assert got == pytest.approx(reference(kpi, by_channel=True, channels=EMAIL))
    total = values(query(client, "agency", kpis=["lead_count", "spend"]), "lead_count", keys=())
    assert total == {(): 3}  # leads 1, 2 and 6; the other four are ppc and social


@pytest.mark.parametrize("where", [
    "1=1) or (1=1",
    "channel = 'ppc') or (channel = 'ppc'",
    "channel = 'ppc')) or ((1=1",
    "1=1) or channel in ('ppc'",
])
def test_a_where_filter_cannot_escape_the_policy(client, where):
    response = query(client, "agency", kpis=["lead_count"], by=["channel"], where=where)
    assert response.status_code in (400, 403, 422)
    assert "ppc" not in json.dumps(response.json().get("rows", []))


@pytest.mark.parametrize("where, expected", [
    ("channel = 'ppc' or 1 = 1", {("email",): 3}),  # (email) and (ppc or true): email alone
    ("channel = 'ppc'", {}),                      # (email) and (ppc): nothing
    ("not (channel = 'email')", {}),
    ("channel in ('email', 'ppc', 'social')", {("email",): 3}),
])
def test_a_where_filter_only_narrows_the_policy(client, where, expected):
    assert values(query(client, "agency", kpis=["lead_count"], by=["channel"], where=where), "lead_count") == expected


def test_kpis_the_policy_cannot_filter_are_hidden_and_refused(client):
    names = [k["name"] for k in client.get("/v1/kpis", headers=bearer("agency")).json()["kpis"]]
    assert names == ["lead_count", "spend", "cpl"]  # repeat_leads looks up each person's leads in every channel
    response = query(client, "agency", kpis=["repeat_leads"])
    assert response.status_code == 403
    assert "looks up each entity's rows" in response.json()["error"]["message"]
    admin = values(query(client, "admin", kpis=["repeat_leads"]), "repeat_leads", keys=())
    assert admin == {(): 4}  # people a (leads 1, 3) and c (leads 4, 6)


def test_the_row_policy_applies_to_csv_and_to_period_series(client):
    response = client.post("/v1/query?format=csv", json={"kpis": ["spend"], "by": ["channel"], "grain": "month"},
                           headers=bearer("agency"))
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0] == "period,channel,spend,complete"
    assert {line.split(",")[1] for line in lines[1:]} == {"email"}


def test_restrict_builds_exactly_the_conjunction():
    access = Access("agency", None, False, "channel in ('email')")
    assert access.restrict(None) == "channel in ('email')"
    assert access.restrict("region = 'EU'") == "(channel in ('email')) and (region = 'EU')"
    from kpi_engine.errors import FormulaError

    with pytest.raises(FormulaError):  # parsed alone first: the stray ')' is a syntax error
        access.restrict("1=1) or (1=1")
    assert Access("open").restrict("1=1) or (1=1") == "1=1) or (1=1"  # no policy: the engine reports it


# --- token files ------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("tokens: 3", "are not a list"),
    ("tokens:\n  - token: abcdefghijklmnopq", "a token has no name"),
    ("tokens:\n  - name: a", "needs exactly one of 'token' and 'sha256'"),
    ("tokens:\n  - {name: a, token: short}", "shorter than 16 characters"),
    ("tokens:\n  - {name: a, sha256: abc}", "not a 64-digit hex digest"),
    ("tokens:\n  - {name: a, token: abcdefghijklmnopq, kpi: [x]}", "unknown key 'kpi'"),
    ("tokens:\n  - {name: a, token: abcdefghijklmnopq, where: 'channel ='}", "formula syntax error"),
    ("tokens:\n  - {name: a, token: abcdefghijklmnopq}\n  - {name: b, token: abcdefghijklmnopq}", "same secret"),
    ("tokens: [", "not valid YAML or JSON"),
])
def test_bad_token_files_are_refused_with_a_clear_error(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_tokens(text)


def test_tokens_naming_unknown_kpis_or_dimensions_are_refused_at_start(tmp_path):
    project = make_serve_project(tmp_path / "shop")
    bad_kpi = json.dumps([{"name": "a", "token": "abcdefghijklmnopq", "kpis": ["cpll"]}])
    with pytest.raises(UsageError, match="allows the unknown KPI 'cpll'"):
        KpiService.open(ServeSettings(project=project, tokens=bad_kpi))
    bad_policy = json.dumps([{"name": "a", "token": "abcdefghijklmnopq", "where": "region = 'EU'"}])
    with pytest.raises(UsageError, match="uses 'region', which is not a dimension of any source"):
        KpiService.open(ServeSettings(project=project, tokens=bad_policy))


def test_forbidden_is_a_403_error_class():
    assert Forbidden("x").http_status == 403
