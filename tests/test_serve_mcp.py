"""The MCP server, driven by the official SDK's own client: over standard input/output against
a `kpi-engine mcp` subprocess, and over streamable HTTP against `serve` on 127.0.0.1.
Numbers are checked against serve_helpers.reference; policies the same as through the API."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402  (the HTTP client the MCP SDK is built on)
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import ServeSettings  # noqa: E402
from serve_helpers import SECRETS, TOKENS, make_serve_project, reference, running_server  # noqa: E402

TOOLS = {"list_kpis", "list_dimensions", "explain_kpi", "query"}


def payload(result) -> dict:
    """A tool's answer as a dict (its structured content, or the JSON text it returned)."""
    if result.structured_content:
        return result.structured_content
    return json.loads(result.content[0].text)


def by_channel(answer: dict, kpi: str) -> dict:
    return {(row["channel"],): row[kpi] for row in answer["rows"]}


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    return make_serve_project(tmp_path_factory.mktemp("mcp") / "shop")


def stdio(project_dir, token: str | None = None, tokens: str | None = None) -> Client:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_ENGINE_")}
    if tokens:
        env["KPI_ENGINE_TOKENS"] = tokens
    if token:
        env["KPI_ENGINE_TOKEN"] = token
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "kpi_engine.cli", "mcp", str(project_dir)],
                                        env=env), read_timeout_seconds=60)


def test_stdio_server_lists_tools_and_answers_a_query(project_dir):
    async def talk():
        async with stdio(project_dir) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            kpis = payload(await client.call_tool("list_kpis", {}))
            dims = payload(await client.call_tool("list_dimensions", {}))
            explained = payload(await client.call_tool("explain_kpi", {"name": "cpl"}))
            answer = payload(await client.call_tool("query", {"kpis": ["cpl"], "by": ["channel"],
                                                              "start": "2025-01-01", "end": "2025-03-01"}))
            return tools, kpis, dims, explained, answer

    tools, kpis, dims, explained, answer = asyncio.run(talk())
    assert tools == TOOLS
    assert [k["name"] for k in kpis["kpis"]] == ["lead_count", "spend", "cpl", "repeat_leads"]
    assert dims["dimensions"][0]["name"] == "channel"
    assert explained["formula"] == "spend / lead_count" and "Cost per lead" in explained["explanation"]
    assert [c["name"] for c in answer["columns"]] == ["channel", "cpl", "complete"]
    assert by_channel(answer, "cpl") == pytest.approx(reference("cpl", by_channel=True, start="2025-01-01",
                                                                end="2025-03-01"))


def test_stdio_errors_read_like_the_command_line(project_dir):
    async def talk():
        async with stdio(project_dir) as client:
            return (await client.call_tool("query", {"kpis": ["cpll"]}),
                    await client.call_tool("query", {"kpis": ["cpl"], "start": "March"}))

    unknown, bad_date = asyncio.run(talk())
    assert unknown.is_error and "unknown KPI 'cpll'" in unknown.content[0].text and "cpl" in unknown.content[0].text
    assert bad_date.is_error and "YYYY-MM-DD" in bad_date.content[0].text


def test_stdio_applies_the_token_policy(project_dir):
    async def talk():
        async with stdio(project_dir, SECRETS["agency"], TOKENS) as client:
            kpis = payload(await client.call_tool("list_kpis", {}))
            rows = payload(await client.call_tool("query", {"kpis": ["lead_count"], "by": ["channel"],
                                                            "where": "1=1 or channel = 'ppc'"}))
            forbidden = await client.call_tool("query", {"kpis": ["repeat_leads"]})
            return kpis, rows, forbidden

    kpis, rows, forbidden = asyncio.run(talk())
    assert [k["name"] for k in kpis["kpis"]] == ["lead_count", "spend", "cpl"]
    assert by_channel(rows, "lead_count") == {("email",): 3}
    assert forbidden.is_error and "cannot be read under the row policy" in forbidden.content[0].text


def test_stdio_without_the_callers_token_refuses_to_start(project_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_ENGINE_")}
    env["KPI_ENGINE_TOKENS"] = TOKENS
    done = subprocess.run([sys.executable, "-m", "kpi_engine.cli", "mcp", str(project_dir)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Error: this server needs an API token.") and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def http_url(project_dir):
    service = KpiService.open(ServeSettings(project=project_dir, tokens=TOKENS))
    with running_server(create_app(service)) as url:
        yield url


def over_http(url: str, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {SECRETS[token]}"}, timeout=60)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


def test_http_mcp_answers_like_the_api(http_url):
    async def talk():
        async with over_http(http_url, "admin") as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            answer = payload(await client.call_tool("query", {"kpis": ["spend", "lead_count"], "by": ["channel"]}))
            return tools, answer

    tools, answer = asyncio.run(talk())
    assert tools == TOOLS
    assert by_channel(answer, "spend") == pytest.approx(reference("spend", by_channel=True))
    assert by_channel(answer, "lead_count") == pytest.approx(reference("lead_count", by_channel=True))

    conn = http.client.HTTPConnection(http_url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/query", json.dumps({"kpis": ["spend", "lead_count"], "by": ["channel"]}),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['admin']}"})
    api = json.loads(conn.getresponse().read())
    assert api["rows"] == answer["rows"] and api["sql"] == answer["sql"]


def test_http_mcp_enforces_allowlists_and_row_policies(http_url):
    async def talk():
        async with over_http(http_url, "limited") as client:
            limited = (payload(await client.call_tool("list_kpis", {})),
                       await client.call_tool("query", {"kpis": ["spend"]}),
                       await client.call_tool("explain_kpi", {"name": "cpl"}),
                       await client.call_tool("query", {"kpis": ["lead_count"], "formulas": ["cpl"]}))
        async with over_http(http_url, "agency") as client:
            agency = await client.call_tool("query", {"kpis": ["spend"], "by": ["channel"], "where": "1=1) or (1=1"})
            policy = payload(await client.call_tool("query", {"kpis": ["spend"], "by": ["channel"]}))
        return limited, agency, policy

    (catalogue, spend, explain, formula), escape, policy = asyncio.run(talk())
    assert [k["name"] for k in catalogue["kpis"]] == ["lead_count"]
    for refused in (spend, explain, formula):
        assert refused.is_error and "not allowed for the token 'limited'" in refused.content[0].text
    assert escape.is_error and "ppc" not in escape.content[0].text
    assert by_channel(policy, "spend") == pytest.approx(reference("spend", by_channel=True, channels={"email"}))


def test_http_mcp_without_a_valid_token_is_401(http_url):
    for headers in ({}, {"Authorization": "Bearer not-a-token-0123456789"}):
        conn = http.client.HTTPConnection(http_url.removeprefix("http://"), timeout=30)
        conn.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                     {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
        response = conn.getresponse()
        assert response.status == 401
        assert "token" in json.loads(response.read())["error"]["message"]


def test_a_bug_in_a_tool_says_internal_error_without_internals(project_dir, monkeypatch):
    from kpi_engine.serve.access import OPEN
    from kpi_engine.serve.agent import build_agent

    service = KpiService.open(ServeSettings(project=project_dir))

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "query", broken)

    async def talk():
        async with Client(build_agent(service, OPEN)) as client:  # the SDK's in-process connection
            return await client.call_tool("query", {"kpis": ["spend"]})

    result = asyncio.run(talk())
    assert result.is_error and "internal error: the server could not answer." in result.content[0].text
    assert "secret internals" not in result.content[0].text
    service.close()
