import pytest

from kpi_engine import nodes as n
from kpi_engine.engine import KpiProject
from kpi_engine.errors import ProjectInvalid
from kpi_engine.resolve import resolve
from kpi_engine.spec import load_project

SOURCES = """
sources:
  leads:
    table: leads
    time: created_at
    dimensions: [channel, industry]
  ad_spend:
    table: ad_spend
    time: spend_date
    dimensions: [channel]
"""
TABLES = {
    "leads": [{"lead_id": 1, "created_at": "2025-01-01 10:00:00", "channel": "ppc", "industry": "saas",
               "customer_at": ""}],
    "ad_spend": [{"spend_date": "2025-01-01", "channel": "ppc", "spend": "10.00"}],
}


def errors_of(make_project, kpis, describe=True, tables=TABLES):
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": kpis}, tables)
    with pytest.raises(ProjectInvalid) as info:
        with KpiProject(load_project(root)) as project:
            project.model(describe=describe)
    return [(e.location.line, e.location.column, e.message, e.hint or "") for e in info.value.errors]


def test_derived_kpis_resolve_to_semantic_nodes(make_project):
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": """
        kpis:
          spend: {formula: sum(ad_spend.spend)}
          leads_n: {formula: count(leads where channel = 'ppc')}
          cpl: {formula: spend / leads_n}
        """})
    model = resolve(load_project(root))
    cpl = model.kpis["cpl"]
    assert cpl.expr == n.Binary("/", n.KpiRef("spend"), n.KpiRef("leads_n"))
    assert cpl.sources == {"ad_spend", "leads"}
    assert cpl.dimensions == ("channel",)  # industry is not on ad_spend
    assert model.kpis["leads_n"].expr == n.Aggregate(
        "count", "leads", None, n.Compare("=", n.Column("leads", "channel"), n.StringLit("ppc")))


def test_unknown_names_with_suggestions(make_project):
    found = errors_of(make_project, """
        kpis:
          a: {formula: count(leeds)}
          b: {formula: sum(leads.revenu)}
          c: {formula: cpl_total + 1}
          d: {formula: count(leads where chanel = 'x')}
        """)
    assert (2, 22, "unknown source 'leeds'.", "Did you mean 'leads'?") in found
    assert any(f[:2] == (3, 20) and "source 'leads' has no column 'revenu'" in f[2] for f in found)
    assert any(f[:2] == (4, 16) and f[2] == "unknown KPI 'cpl_total'." for f in found)
    assert any(f[:2] == (5, 34) and "no column 'chanel'" in f[2] and "Did you mean 'channel'?" in f[3] for f in found)


def test_cycles_are_reported_with_their_path(make_project):
    found = errors_of(make_project, """
        kpis:
          a: {formula: b + 1}
          b: {formula: c * 2}
          c: {formula: a / 3}
          d: {formula: a + 1}
        """, describe=False)
    assert [f[2] for f in found] == ["KPIs reference each other in a cycle: a -> b -> c -> a."]
    assert found[0][:2] == (2, 16)


def test_self_reference_is_a_cycle(make_project):
    found = errors_of(make_project, "kpis:\n  a: {formula: a + 1}\n", describe=False)
    assert found[0][2] == "KPIs reference each other in a cycle: a -> a."


def test_declared_dimension_must_be_on_every_source(make_project):
    found = errors_of(make_project, """
        kpis:
          cpl:
            formula: sum(ad_spend.spend) / count(leads)
            dimensions: [channel, industry]
        """, describe=False)
    assert found == [(4, 27, "dimension 'industry' is not available on every source this KPI reads "
                              "(missing on: ad_spend).",
                      "Declare 'industry' on ad_spend or remove it from the KPI's dimensions.")]


@pytest.mark.parametrize("formula, message", [
    ("sum(leads.channel)", "'sum' needs numbers, but this is a string."),
    ("sum(sum(ad_spend.spend))", "'sum' is an aggregate inside another aggregate."),
    ("median(ad_spend.spend)", "unknown function 'median'."),
    ("round(1, 2, 3)", "'round' takes 1 to 2 arguments, not 3."),
    ("if(count(leads), 1, 2)", "expected a condition (true/false) here, but this is a number."),
    ("ad_spend.spend * 2", "column 'ad_spend.spend' is used outside an aggregate."),
    ("count(leads) + 'x'", "expected a number here, but this is a string."),
    ("count(leads where channel)", "expected a condition (true/false) here, but this is a string."),
    ("count(leads where channel = 3)", "cannot compare a string with a number."),
    ("sum(leads)", "'sum(leads)' needs a column."),
    ("count(leads) > 3", "a KPI formula must give a number, but this gives a boolean."),
    ("sum(ad_spend.spend where leads.channel = 'x')",
     "'leads.channel' belongs to source 'leads', but this aggregate reads 'ad_spend'."),
    ("abs(1) where", None),
])
def test_semantic_errors(make_project, formula, message):
    kpis = f"kpis:\n  x:\n    formula: \"{formula}\"\n"
    found = errors_of(make_project, kpis)
    if message is None:
        assert "syntax error" in found[0][2]
    else:
        assert message in [f[2] for f in found]
    assert all(f[0] == 3 for f in found)


def test_missing_tables_and_declared_columns_are_checked_against_the_warehouse(make_project):
    root = make_project({"sources.yaml": """
        sources:
          leads: {table: leads, time: created_on, dimensions: [channel, region]}
          ghosts: {table: ghosts}
        """, "k.yaml": "kpis:\n  n: {formula: count(leads)}\n"}, TABLES)
    with pytest.raises(ProjectInvalid) as info:
        with KpiProject(load_project(root)) as project:
            project.model()
    found = [(e.location.line, e.message) for e in info.value.errors]
    assert (2, "time column 'created_on' does not exist in leads.") in found
    assert (2, "dimension column 'region' does not exist in leads.") in found
    assert (3, "table 'ghosts' does not exist in the warehouse.") in found
