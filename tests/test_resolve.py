import pytest

from kpi_engine import nodes as n
from kpi_engine.engine import KpiProject
from kpi_engine.errors import FormulaError, ProjectInvalid
from kpi_engine.hookspecs import Adapter, hookimpl
from kpi_engine.parser import _lark, tree_depth
from kpi_engine.plugins import Registry
from kpi_engine.resolve import formula_depth, resolve, resolve_formula
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
    ("mode(ad_spend.spend)", "unknown function 'mode'."),
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


# Depth by hand: one level per operator and per call; names and literals add none.
@pytest.mark.parametrize("formula, depth", [
    ("1", 0), ("count(leads)", 1), ("1 + 2", 1), ("1 + 2 + 3 + 4", 3), ("(1 + 2) + (3 + 4)", 2),
    ("count(leads) + 1 + 2 + 3", 4), ("(count(leads) + 1) + (2 + 3)", 3), ("- - count(leads)", 3),
    ("count(leads where channel = 'ppc' and not industry = 'saas')", 4),
    ("if(count(leads) > 1, sum(ad_spend.spend), 0)", 3), ("previous(count(leads), 2)", 2),
    ("count(leads where industry in ('saas', 'retail'))", 2), ("spend_total + 1", 1 + 1),
    ("spend_total / leads_total", 1 + 1), ("leads_twice * 2", 1 + 2),
])
def test_depth_is_counted_alike_on_the_text_and_the_resolved_tree(make_project, formula, depth):
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": """
        kpis:
          spend_total: {formula: sum(ad_spend.spend)}
          leads_total: {formula: count(leads)}
          leads_twice: {formula: leads_total + leads_total}
        """})
    model = resolve(load_project(root))
    assert {name: kpi.depth for name, kpi in model.kpis.items()} == {"spend_total": 1, "leads_total": 1,
                                                                      "leads_twice": 2}
    expr, _ = resolve_formula(model, formula)
    assert formula_depth(expr, {name: kpi.depth for name, kpi in model.kpis.items()}) == depth
    if "_t" not in formula:  # without KPI references, the parser's count is the same
        assert tree_depth(_lark().parse(formula)) == depth


def test_kpis_that_reference_kpis_may_not_be_deeper_than_150(make_project):
    # a is 48 '+' over count(leads): 49 levels. b, c and d each put 49 '+' over the KPI before
    # (the leftmost operand of the chain): 98, 147, 196.
    chain = "+".join(["count(leads)"] * 49)
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": f"""
        kpis:
          a: {{formula: "{chain}"}}
          b: {{formula: "a + {chain}"}}
          c: {{formula: "b + {chain}"}}
          d: {{formula: "c + {chain}"}}
          e: {{formula: d + 1}}
        """})
    with pytest.raises(ProjectInvalid) as info:
        resolve(load_project(root))
    # Only d, where the chain crosses the limit: e is too deep because of d.
    assert [(e.location.line, e.location.column, e.message) for e in info.value.errors] == [
        (5, 17, "the formula is 196 levels deep once the KPIs it references are written out in full "
                "('c' is 147 by itself); the limit is 150.")]
    assert info.value.errors[0].hint.startswith("Make the KPIs it builds on less deep, or group long chains")


def test_ad_hoc_formulas_that_reference_kpis_may_not_be_deeper_than_150(make_project):
    chain = "+".join(["count(leads)"] * 100)
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": f"kpis:\n  deep: {{formula: \"{chain}\"}}\n"})
    model = resolve(load_project(root))
    assert model.kpis["deep"].depth == 100
    expr, _ = resolve_formula(model, "deep" + " + 1" * 50)  # 50 more levels: 150
    assert formula_depth(expr, {"deep": 100}) == 150
    with pytest.raises(FormulaError) as info:
        resolve_formula(model, "deep" + " + 1" * 51)
    assert info.value.message == ("the formula is 151 levels deep once the KPIs it references are written out in "
                                  "full ('deep' is 100 by itself); the limit is 150.")
    with pytest.raises(FormulaError) as info:  # 50 'and' over a comparison over deep
        resolve_formula(model, "deep > 1" + " and 1 = 1" * 50, mode="having", label="--having condition")
    assert info.value.message.startswith("the formula is 151 levels deep")
    assert info.value.location.obj == "--having condition"


class _SparkDialectAdapter(Adapter):
    """Declares Spark's dialect; never connects (resolving must not need the warehouse)."""

    name = "sparkish"
    dialect = "spark"

    @classmethod
    def connect(cls, settings, project_root):
        raise AssertionError("resolving a project must not connect")


class _SparkDialectPlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        return [_SparkDialectAdapter]


BACKQUOTED = """
sources:
  paid:
    sql: SELECT `lead_id`, `created_at` FROM `leads` WHERE `channel` = 'ppc'
    time: created_at
"""


@pytest.mark.parametrize("config, problem", [
    ("warehouse: {adapter: sparkish}\n", None),  # read as the adapter's Spark SQL
    ("warehouse: {adapter: duckdb, data: data}\n", "does not parse as duckdb SQL"),
    ("warehouse: {adapter: duckdb, data: data}\ndialect: spark\n", None),  # the project's dialect wins
    ("warehouse: {adapter: sparkish}\ndialect: duckdb\n", "does not parse as duckdb SQL"),
    ("warehouse: {adapter: not_installed}\n", "does not parse as duckdb SQL"),  # unknown: DuckDB, as before
    ("", "does not parse as duckdb SQL"),  # no warehouse
])
def test_sql_sources_are_read_in_the_dialect_of_the_adapter(make_project, config, problem):
    from kpi_engine.adapters import duckdb as duckdb_plugin

    registry = Registry(load_entry_points=False)
    registry.register(duckdb_plugin, "duckdb")
    registry.register(_SparkDialectPlugin(), "sparkish")
    root = make_project({"sources.yaml": BACKQUOTED}, config="name: t\n" + config)
    with KpiProject(load_project(root), registry=registry) as project:
        if problem is None:
            assert project.model(describe=False).sources["paid"].sql.startswith("SELECT `lead_id`")
        else:
            with pytest.raises(ProjectInvalid) as info:
                project.model(describe=False)
            assert [(e.location.line, problem in e.message) for e in info.value.errors] == [(3, True)]
