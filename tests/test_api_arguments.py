"""The Python API checks its arguments: a wrong type is a UsageError naming the argument, a
right type with a wrong value the QueryError the command line gives (docs/python.md), never a
TypeError or AttributeError from deep inside. Each argument, then a right call with the same
project, whose value is computed by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from kpi_engine import open_project
from kpi_engine.engine import check_project, make_request
from kpi_engine.errors import KpiEngineError, QueryError, UsageError

SOURCES = "sources:\n  leads: {table: leads, time: created_at, primary_key: id, dimensions: [channel]}\n"
KPIS = "kpis:\n  leads_n: {formula: count(leads)}\n"
# Two leads in January 2025 (ppc, email), one in February (email).
LEADS = [{"id": 1, "created_at": "2025-01-03 10:00:00", "channel": "ppc"},
         {"id": 2, "created_at": "2025-01-20 11:00:00", "channel": "email"},
         {"id": 3, "created_at": "2025-02-03 09:30:00", "channel": "email"}]


@pytest.fixture
def kpi_project(make_project):
    with open_project(make_project({"s.yaml": SOURCES, "k.yaml": KPIS}, {"leads": LEADS})) as project:
        yield project


WRONG_TYPES = [
    ({"kpis": None}, QueryError, "nothing to compute"),  # None is no KPIs, as () is
    ({"kpis": 5}, UsageError, "'kpis' must be one of the KPI names or a list of them, not int"),
    ({"kpis": [5]}, UsageError, "'kpis' must hold text only, but item 1 is int"),
    ({"kpis": b"leads_n"}, UsageError, "'kpis' must be one of the KPI names or a list of them, not bytes"),
    ({"kpis": {"leads_n": 1}}, UsageError, "not dict"),
    ({"by": 3}, UsageError, "'by' must be one of the dimension names or a list of them, not int"),
    ({"by": ["channel", None]}, UsageError, "'by' must hold text only, but item 2 is None"),
    ({"order_by": 1.5}, UsageError, "'order_by' must be one of the output column names or a list of them, not float"),
    ({"formulas": [["count(leads)"]]}, UsageError, "'formulas' must hold text only, but item 1 is list"),
    ({"grain": 5}, UsageError, "'grain' must be a grain (text) or None, not int"),
    ({"grain": "fortnight"}, QueryError, "unknown time grain 'fortnight'"),
    ({"start": "garbage"}, UsageError, "'garbage' is not a date (start)"),
    ({"start": 20250101}, UsageError, "'20250101' is not a date (start)"),
    ({"end": ["2025-01-01"]}, UsageError, "is not a date (end)"),
    ({"start": "2025-02-01", "end": "2025-01-01"}, QueryError, "the time range is empty"),
    ({"where": 5}, UsageError, "'where' must be a condition (text) or None, not int"),
    ({"where": "channel ="}, KpiEngineError, "formula syntax error"),
    ({"having": True}, UsageError, "'having' must be a condition (text) or None, not bool"),
    ({"limit": "5"}, UsageError, "'limit' must be a whole number or None, not str ('5')"),
    ({"limit": 5.0}, UsageError, "'limit' must be a whole number or None, not float"),
    ({"limit": True}, UsageError, "not bool"),
    ({"limit": -1}, QueryError, "--limit must be zero or more"),
    ({"limit": 2 ** 64}, UsageError, "'limit' is 18,446,744,073,709,551,616; the largest limit is"),
    ({"fill": "no"}, UsageError, "'fill' must be True or False, not str"),
    ({"fill": None}, UsageError, "'fill' must be True or False, not None"),
    ({"dialect": 3}, UsageError, "'dialect' must be a dialect name (text) or None, not int"),
    ({"dialect": "klingon"}, QueryError, "klingon"),
    ({"describe": "yes"}, UsageError, "'describe' must be True or False, not str"),
    ({"bye": ["channel"]}, UsageError, "unknown option 'bye'. Did you mean 'by'?"),
]


@pytest.mark.parametrize("arguments, error, message", WRONG_TYPES, ids=[str(case[0]) for case in WRONG_TYPES])
def test_compile_and_evaluate_check_each_argument(kpi_project, arguments, error, message):
    arguments = {"kpis": ["leads_n"], **arguments}
    kpis = arguments.pop("kpis")
    for call in (kpi_project.compile, kpi_project.evaluate):
        if call == kpi_project.evaluate and "dialect" in arguments:
            continue  # an option of compile only
        with pytest.raises(error) as raised:
            call(kpis, **arguments)
        assert message in str(raised.value)


def test_stream_checks_its_batch_size(kpi_project):
    for size in (0, -5, "100", 2.5, None, True):
        with pytest.raises(UsageError, match="'batch_size' must be a whole number of at least 1"):
            kpi_project.stream(["leads_n"], batch_size=size)
    compiled, batches = kpi_project.stream(["leads_n"], by=["channel"], batch_size=1)
    assert [len(batch) for batch in batches] == [1, 1]


@pytest.mark.parametrize("arguments, message", [
    ({"path": None}, "'path' must be the project folder (a str or Path), not None"),
    ({"path": 5}, "'path' must be the project folder (a str or Path), not int"),
    ({"warehouse": 5}, "'warehouse' must be a URL or a mapping of settings, not int"),
    ({"warehouse": {"data": "data"}}, "the warehouse settings have no 'adapter'"),
    ({"timeout": "soon"}, "'timeout' must be a number of seconds above 0"),
])
def test_open_project_checks_its_arguments(make_project, arguments, message):
    root = make_project({"s.yaml": SOURCES, "k.yaml": KPIS}, {"leads": LEADS})
    arguments = {"path": root, **arguments}
    with pytest.raises(UsageError) as raised:
        open_project(arguments.pop("path"), **arguments).evaluate(["leads_n"])
    assert message in str(raised.value)


def test_check_project_checks_its_arguments(make_project):
    root = make_project({"s.yaml": SOURCES, "k.yaml": KPIS}, {"leads": LEADS})
    with pytest.raises(UsageError, match="'path' must be the project folder"):
        check_project(None)
    with pytest.raises(UsageError, match="'describe' must be True or False"):
        check_project(root, describe="no")
    model, errors = check_project(root, describe=False)
    assert errors == [] and list(model.kpis) == ["leads_n"]


def test_the_right_types_give_the_right_rows(kpi_project):
    """Every argument of the table above, given as documented: a name or a list, dates as text
    or datetime.date, an int limit."""
    rows = kpi_project.evaluate("leads_n", by="channel", grain="month", start=dt.date(2025, 1, 1),
                                end="2025-03-01", where="channel in ('ppc', 'email')", having="leads_n > 0",
                                order_by=("period", "-channel"), limit=2, formulas=(), fill=False).to_dicts()
    # January: ppc 1, email 1; February: email 1. Channels in reverse order, the first two rows.
    # January starts before the data does (2025-01-03): not complete.
    assert rows == [{"period": dt.date(2025, 1, 1), "channel": "ppc", "leads_n": 1.0, "complete": False},
                    {"period": dt.date(2025, 1, 1), "channel": "email", "leads_n": 1.0, "complete": False}]
    assert kpi_project.evaluate(None, formulas="count(leads)").to_dicts() == [{"formula": 3.0, "complete": True}]
    assert make_request(("a", "b"), by=iter(["c"]), limit=0).dimensions == ("c",)
