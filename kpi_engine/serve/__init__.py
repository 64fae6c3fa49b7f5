"""Serving KPIs over HTTP (API, explorer page, MCP) with a cache and access policies.

    kpi-engine serve examples/marketing          # http://127.0.0.1:8000/
    kpi-engine mcp examples/marketing            # an MCP server on standard input/output

Modules, one concern each: ``settings`` (flags and environment), ``access`` (tokens, KPI
allowlists, row policies), ``cache`` (results by SQL and freshness, single-flight),
``service`` (the one place a request is checked, limited, cached and run: every door goes
through it), ``models`` (the HTTP request and response shapes), ``api`` (the FastAPI app),
``explorer`` (the page at /), ``agent`` (the MCP tools), ``logs`` (JSON access logs) and
``command`` (the ``serve`` and ``mcp`` commands). Importing this package needs none of the
``serve`` extra's libraries; the modules that use them import them.
"""
