"""Serving KPIs over HTTP (API, explorer page, MCP) with a cache and access policies.

    kpi-engine serve examples/marketing          # http://127.0.0.1:8000/
    kpi-engine mcp examples/marketing            # an MCP server on standard input/output

Modules, one concern each: ``settings`` (what a server is told), ``access`` (tokens, KPI
allowlists, row policies), ``cache`` (answers by SQL and freshness, single-flight), ``service``
(the one place a request is checked, limited, cached and run: every door goes through it),
``models`` (request and answer shapes), ``api`` (the FastAPI app), ``explorer`` (the page at /),
``agent`` (the MCP tools), ``middleware`` (body limit, JSON logs), ``command`` (the ``serve`` and
``mcp`` commands) and ``run`` (starting them). Importing this package needs none of the
``serve`` extra's libraries; the modules that use them import them.
"""
