import pytest

from kpi_engine.errors import ProjectInvalid, SpecError
from kpi_engine.spec import load_project

SOURCES = """
sources:
  leads:
    table: leads
    time: created_at
    dimensions: [channel]
"""


def problems(root):
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    return info.value.errors


def where(error):
    loc = error.location
    return (loc.file.rsplit("/", 1)[-1], loc.line, loc.column)


def test_a_valid_project_loads_with_every_field(make_project):
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": """
        kpis:
          lead_count:
            label: Leads
            description: Leads created.
            unit: count
            owner: ops
            tags: [funnel]
            dimensions: [channel]
            formula: count(leads)
        """})
    project = load_project(root)
    kpi = project.kpis["lead_count"]
    assert (kpi.label, kpi.unit, kpi.tags, kpi.dimensions, kpi.formula) == (
        "Leads", "count", ("funnel",), ("channel",), "count(leads)")
    assert project.sources["leads"].dimension_names == ("channel",)
    assert where_of(kpi) == ("kpis.yaml", 2, 3)


def where_of(spec):
    loc = spec.where(key=True)
    return (loc.file.rsplit("/", 1)[-1], loc.line, loc.column)


def test_every_schema_problem_is_reported_with_its_position(make_project):
    root = make_project({"sources.yaml": SOURCES, "kpis.yaml": """
        kpis:
          a:
            formla: count(leads)
          b:
            formula: count(leads)
            unit: percentage
          c:
            formula: count(leads)
            tags: 5
          d:
            label: no formula
        """})
    found = problems(root)
    assert [where(e) for e in found] == [
        ("kpis.yaml", 3, 5),   # a: unknown field formla (a is then left out)
        ("kpis.yaml", 6, 11),  # b: unit
        ("kpis.yaml", 9, 11),  # c: tags
        ("kpis.yaml", 10, 3),  # d: missing formula
    ]
    text = "\n".join(str(e) for e in found)
    assert "unknown field 'formla'" in text and "Did you mean 'formula'?" in text
    assert "'percentage' is not one of" in text and "Did you mean 'percent'?" in text
    assert "kpis.c.tags must be an array, not int" in text
    assert "KPI 'd' has no formula." in text


def test_yaml_syntax_errors_and_tabs(make_project):
    root = make_project({"a.yaml": "kpis:\n  x: {formula: count(leads)\n", "b.yaml": "kpis:\n\tx: 1\n"})
    found = problems(root)
    # An unclosed '{' is reported where it was opened, not at the end of the file.
    assert where(found[0]) == ("a.yaml", 2, 6)
    assert "the '{' opened here is never closed" in str(found[0])
    assert where(found[1])[:2] == ("b.yaml", 2)
    assert "indent with spaces" in str(found[1])


def test_duplicate_keys_in_a_file_and_names_across_files(make_project):
    root = make_project({
        "a.yaml": "kpis:\n  x:\n    formula: count(leads)\n  x:\n    formula: count(leads)\n",
        "b.yaml": SOURCES,
        "c.yaml": SOURCES,
    })
    found = problems(root)
    messages = [(where(e), e.message) for e in found]
    assert (("a.yaml", 4, 3), "duplicate key 'x' (first defined at line 2).") in messages
    assert any(w == ("c.yaml", 2, 3) and "source 'leads' is defined twice" in m for w, m in messages)


def test_bad_names_empty_files_and_bad_bytes(make_project):
    root = make_project({"a.yaml": "kpis:\n  bad-name:\n    formula: '1'\n", "empty.yaml": "# nothing\n"})
    (root / "latin1.yaml").write_bytes(b"kpis:\n  x:\n    label: caf\xe9\n    formula: '1'\n")
    found = problems(root)
    by_file = {where(e)[0]: e for e in found}
    assert "'bad-name' is not a valid name" in str(by_file["a.yaml"])
    assert where(by_file["a.yaml"]) == ("a.yaml", 2, 3)
    assert "empty" in str(by_file["empty.yaml"])
    assert "not valid UTF-8" in str(by_file["latin1.yaml"]) and where(by_file["latin1.yaml"]) == ("latin1.yaml", 3, 15)


def test_source_needs_exactly_one_of_table_and_sql(make_project):
    root = make_project({"s.yaml": """
        sources:
          both: {table: t, sql: select 1 as x}
          neither: {time: t}
        """})
    found = problems(root)
    assert [where(e) for e in found] == [("s.yaml", 2, 3), ("s.yaml", 3, 3)]
    assert all("exactly one of 'table' and 'sql'" in e.message for e in found)


def test_yaml_1_1_booleans_are_plain_text(make_project):
    root = make_project({"s.yaml": """
        sources:
          orders:
            table: orders
            relationships:
              - {to: customers, on: customer_id}
          customers: {table: customers}
        """})
    project = load_project(root)
    assert project.sources["orders"].relationships[0].on == "customer_id"


def test_missing_project_file(tmp_path):
    with pytest.raises(SpecError, match="has no kpi_engine.yaml"):
        load_project(tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        load_project(tmp_path / "nope")


def test_block_formula_positions_point_into_the_file(make_project):
    from kpi_engine.errors import FormulaError
    from kpi_engine.parser import parse

    root = make_project({"sources.yaml": SOURCES, "k.yaml": """
        kpis:
          x:
            formula: >
              count(leads) /
                (count(leads) +)
        """})
    kpi = load_project(root).kpis["x"]
    with pytest.raises(FormulaError) as info:
        parse(kpi.formula, kpi.formula_source)
    assert where(info.value) == ("k.yaml", 5, 24)


def test_a_block_formula_ends_where_the_next_key_starts(make_project):
    root = make_project({"sources.yaml": SOURCES, "k.yaml": """
        kpis:
          x:
            formula: >
              count(leads)
                / count(leads)

          y:
            formula: count(leads)
        """})
    project = load_project(root)
    assert " ".join(project.kpis["x"].formula.split()) == "count(leads) / count(leads)"


@pytest.mark.parametrize("text, line, column", [
    ('kpis:\n  "abc\\n":\n    formula: count(leads)\n', 2, 3),  # a KPI name ending in a newline
    ('sources:\n  s:\n    table: "leads\\n"\n    time: created_at\n', 3, 12),
    ('sources:\n  s:\n    table: leads\n    time: "created_at\\n"\n', 4, 11),
    ('kpis:\n  k:\n    formula: count(leads)\n    dimensions: ["channel\\n"]\n', 4, 18),
    ('kpis:\n  "lé":\n    formula: count(leads)\n', 2, 3),
    ('kpis:\n  "k٥":\n    formula: count(leads)\n', 2, 3),
])
def test_names_are_ascii_letters_digits_and_underscores_only(make_project, text, line, column):
    """The schema's patterns are read by Python's re, where '$' also matches before a last newline."""
    root = make_project({"sources.yaml": SOURCES, "bad.yaml": text})
    (error,) = problems(root)
    assert where(error) == ("bad.yaml", line, column)
    assert "is not a valid" in error.message
