"""What compiling costs is not paid twice (issue 17): a spec file whose content has not changed
is parsed and checked against the schema once per process, and the formula tree is rebuilt only
where a pass changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpi_engine import nodes as n
from kpi_engine import spec
from kpi_engine.engine import open_project
from kpi_engine.parser import parse

PROJECT = """name: cached
warehouse: {adapter: duckdb, data: data}
"""
KPIS = """sources:
  orders:
    table: orders
    time: ordered_at
kpis:
  order_count:
    label: Orders
    formula: count(orders)
"""


@pytest.fixture()
def counted(monkeypatch):
    """How many times a spec file is parsed (a YAML loader made) and checked against a schema."""
    counts = {"parsed": 0, "checked": 0}
    loader, check = spec._Loader.__init__, spec._check_schema

    def parsing(self, stream):
        counts["parsed"] += 1
        loader(self, stream)

    def checking(doc, schema_name):
        counts["checked"] += 1
        return check(doc, schema_name)

    monkeypatch.setattr(spec._Loader, "__init__", parsing)
    monkeypatch.setattr(spec, "_check_schema", checking)
    return counts


def _write(folder: Path, kpis: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "kpi_engine.yaml").write_text(PROJECT)
    (folder / "kpis.yaml").write_text(kpis)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "orders.csv").write_text("ordered_at,amount\n2024-01-03,10\n2024-02-05,20\n")
    return folder


def test_an_unchanged_spec_file_is_parsed_and_checked_once(tmp_path, counted):
    # a content no other test loads: the cache is per process
    folder = _write(tmp_path / "p", KPIS.replace("label: Orders", f"label: Orders {tmp_path.name}"))
    first = open_project(folder)
    after_first = dict(counted)
    second = open_project(folder)
    # the project file is read each time (1 parse, 1 check); kpis.yaml only the first time
    assert counted["parsed"] - after_first["parsed"] == 1
    assert counted["checked"] - after_first["checked"] == 1
    assert after_first["parsed"] == 2 and after_first["checked"] == 2
    assert list(first.project.kpis) == list(second.project.kpis) == ["order_count"]
    with second:
        rows = second.evaluate(["order_count"], grain="month").to_dicts()
    assert [(str(r["period"]), r["order_count"]) for r in rows] == [("2024-01-01", 1), ("2024-02-01", 1)]


def test_an_edited_file_is_read_again_and_its_new_problems_reported(tmp_path, counted):
    folder = _write(tmp_path / "p", KPIS.replace("label: Orders", f"label: Orders {tmp_path.name}"))
    open_project(folder)
    edited = KPIS.replace("label: Orders", f"label: Orders {tmp_path.name}") + """  big_orders:
    label: Big orders
    formula: count(orders where amount > 15)
"""
    (folder / "kpis.yaml").write_text(edited)
    assert list(open_project(folder).project.kpis) == ["order_count", "big_orders"]
    (folder / "kpis.yaml").write_text(edited.replace("    formula: count(orders where amount > 15)\n",
                                                     "    formula: count(orders where amount > 15)\n    colour: red\n"))
    project, errors = spec.read_project(folder)
    assert [e.message for e in errors if "colour" in e.message], errors  # the schema check ran on the new text
    project, errors = spec.read_project(folder)  # and its errors come back on the next load of that text
    assert [e.message for e in errors if "colour" in e.message], errors


def test_map_rebuilds_only_the_path_to_what_changed():
    tree = parse("sum(orders.amount where status = 'paid') / count(leads) + 1")
    assert tree.map(lambda node: node) is tree  # nothing changed: the same tree
    changed = tree.map(lambda node: n.NumberLit(2) if isinstance(node, n.NumberLit) and node.value == 1 else node)
    assert changed is not tree and changed.right == n.NumberLit(2)
    assert changed.left is tree.left  # the untouched division is shared, not copied
    assert changed == parse("sum(orders.amount where status = 'paid') / count(leads) + 2")


def test_walk_lists_parents_first_and_children_in_order():
    tree = parse("sum(orders.amount where status = 'paid') / count(leads) + previous(count(leads))")

    def nested(node):  # the order of a plain recursive walk, written out here
        return [node] + [below for child in node.children() for below in nested(child)]

    walked, expected = list(tree.walk()), nested(tree)
    assert len(walked) == len(expected) > 10
    assert all(a is b for a, b in zip(walked, expected))
    assert isinstance(walked[0], n.Binary) and walked[0].op == "+"


def test_the_aggregates_of_a_formula_are_found_once_and_belong_to_that_tree():
    from kpi_engine.resolve import aggregates_in

    def paid():
        return n.Aggregate("sum", "orders", n.Column("orders", "amount"),
                           n.Binary("=", n.Column("orders", "status"), n.StringLit("paid")))

    def formula():  # sum(orders.amount where status = 'paid') / count(leads) + the same sum, resolved
        return n.Binary("+", n.Binary("/", paid(), n.Aggregate("count", "leads", None)), paid())

    tree, leads = formula(), n.Aggregate("count", "leads", None)
    assert aggregates_in(tree) == [paid(), leads]  # in order, the repeated one once
    visits = []
    original = n.Node.children
    n.Node.children = lambda self: visits.append(self) or original(self)
    try:
        assert aggregates_in(tree) == [paid(), leads] and visits == []  # kept on the tree: not walked again
        orders = n.Aggregate("count", "orders", None)
        changed = tree.map(lambda node: orders if node == leads else node)
        assert changed.right is tree.right  # (map shares what it did not change)
        assert aggregates_in(changed) == [paid(), orders]
        # only the nodes the change rebuilt are visited: the shared subtrees answer with what they keep
        assert sorted(map(id, visits)) == sorted(map(id, [changed, changed.left, orders]))
    finally:
        n.Node.children = original
    assert aggregates_in(tree) == [paid(), leads]  # the original keeps its own
    assert tree == formula() and hash(tree) == hash(formula())  # equality and hashing ignore what is kept


def _written_objects(root) -> list:
    """Every object reachable from ``root`` (through gc referents), stopping at modules and types."""
    import gc
    import types

    seen, stack, found = set(), [root], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        found.append(obj)
        stack.extend(gc.get_referents(obj))
    return found


def test_a_cached_document_keeps_no_yaml_nodes_only_plain_positions(tmp_path):
    # The cache of parsed spec files lives as long as the process: it keeps positions as tuples
    # of numbers (which the garbage collector skips), not PyYAML's nodes and marks (three objects
    # per value, walked by every full collection while a large project compiles).
    import yaml

    text = KPIS + "  described:\n    label: Described\n    formula: |\n      count(orders)\n        / 2\n"
    doc = spec._load_document(str(tmp_path / "kpis.yaml"), text)
    reachable = _written_objects(doc)
    assert not [obj for obj in reachable if isinstance(obj, (yaml.Node, yaml.Mark))]
    # the positions are still those of the file: a block formula starts on the line below its key
    formula, source = doc.formula_source(("kpis", "described", "formula"), "kpi 'described'")
    assert formula == "      count(orders)\n        / 2"
    assert (source.line, source.column) == (text.splitlines().index("      count(orders)") + 1, 1)
    formula, source = doc.formula_source(("kpis", "order_count", "formula"), "kpi 'order_count'")
    line = text.splitlines().index("    formula: count(orders)") + 1
    assert (formula, source.line, source.column) == ("count(orders)", line, len("    formula: ") + 1)


RATIO_KPIS = KPIS + """  big_orders:
    label: Big orders
    formula: count(orders where amount > 15)
  big_share:
    label: Share of big orders
    formula: big_orders / order_count
"""


def test_a_kpi_is_expanded_once_per_model_and_compiles_the_same(tmp_path, monkeypatch):
    from kpi_engine import compiler

    folder = _write(tmp_path / "p", RATIO_KPIS)
    fresh = {name: open_project(folder).compile([name], grain="month").sql()
             for name in ("big_share", "order_count")}  # each from a model of its own
    expanded = []
    expand = compiler.expand
    monkeypatch.setattr(compiler, "expand", lambda model, expr, cache: expanded.append(expr) or expand(model, expr, cache))
    with open_project(folder) as project:
        share = project.compile(["big_share"], grain="month").sql()
        assert len(expanded) == 1  # its references were written out inside that one expansion
        again = project.compile(["big_share"], grain="month").sql()
        alone = project.compile(["order_count"], grain="month").sql()
        assert len(expanded) == 1  # both came from the model's expansions
        assert share == again == fresh["big_share"] and alone == fresh["order_count"]
        rows = project.evaluate(["big_share"], grain="month").to_dicts()
    # orders of 10 (January) and 20 (February): one big order in two
    assert [(str(r["period"]), r["big_share"]) for r in rows] == [("2024-01-01", 0.0), ("2024-02-01", 1.0)]


TIMED_KPIS = RATIO_KPIS + """  growth:
    label: Growth of orders
    formula: 100 * (order_count - previous(order_count)) / previous(order_count)
  running_share:
    label: Running share of big orders
    formula: cumulative(big_orders) / cumulative(order_count)
"""


def _expanded(folder: Path) -> dict[str, n.Node]:
    """Every KPI's formula with its references written out, from a model of its own."""
    from kpi_engine.resolve import expand

    with open_project(folder) as project:
        model = project.model(describe=False)
        return {name: expand(model, model.kpi(name).expr) for name in model.kpis}


def test_what_is_kept_on_formula_nodes_is_what_a_walk_finds(tmp_path):
    # found_below keeps, on every node, what a walk of its subtree finds; a subtree shared by
    # several formulas (a referenced KPI) answers for each of them, in each one's walk order
    from kpi_engine.resolve import aggregates_in
    from kpi_engine.time_ops import WindowLeaf, has_time_ops, lower_time_ops, window_leaves

    formulas = _expanded(_write(tmp_path / "p", TIMED_KPIS))
    lowered = {name: lower_time_ops(expr, "month") for name, expr in formulas.items()}
    for trees in (formulas, lowered):
        for expr in list(trees.values()) + list(trees.values()):  # twice: the second time from what is kept
            walked = list(expr.walk())
            assert aggregates_in(expr) == list(dict.fromkeys(x for x in walked if isinstance(x, n.Aggregate)))
            assert window_leaves(expr) == tuple(dict.fromkeys(x for x in walked if isinstance(x, WindowLeaf)))
            assert has_time_ops(expr) == any(isinstance(x, n.TimeOp) for x in walked)
    assert [name for name, expr in formulas.items() if has_time_ops(expr)] == ["growth", "running_share"]
    assert len(window_leaves(lowered["growth"])) == 1 and len(window_leaves(lowered["running_share"])) == 2
    assert aggregates_in(lowered["running_share"]) == [formulas["big_orders"], formulas["order_count"]]


def test_a_lowered_formula_is_kept_per_grain_and_equals_a_fresh_one(tmp_path):
    from kpi_engine.calendar import Calendar
    from kpi_engine.errors import QueryError
    from kpi_engine.time_ops import lower_time_ops

    folder = _write(tmp_path / "p", TIMED_KPIS)
    kept, fresh = _expanded(folder), _expanded(folder)
    plain = kept["big_share"]
    assert lower_time_ops(plain, "month") is plain  # no time function: the formula itself
    growth = kept["growth"]
    by_month = lower_time_ops(growth, "month", Calendar())
    assert lower_time_ops(growth, "month", Calendar()) is by_month  # kept
    assert by_month == lower_time_ops(fresh["growth"], "month")  # and what a fresh formula gives
    by_week = lower_time_ops(growth, "week")
    assert by_week is not by_month and by_week == lower_time_ops(fresh["growth"], "week")
    for _ in range(2):  # an error is not kept: raised each time
        with pytest.raises(QueryError, match="needs a time grain"):
            lower_time_ops(growth, None)


def test_a_node_keeps_its_hash_but_never_carries_it_elsewhere():
    import copy
    import pickle

    def paid(amount: int):
        return n.Aggregate("sum", "orders", n.Column("orders", "amount"),
                           n.Compare(">", n.Column("orders", "amount"), n.NumberLit(amount)))

    first, same, other = paid(10), paid(10), paid(20)
    assert hash(first) == hash(same) and first == same and first != other
    assert first.__dict__["_hash"] == hash(same)  # kept after the first hash
    assert hash(other) != hash(first)  # (equal hashes would be a coincidence of the seed)
    for moved in (pickle.loads(pickle.dumps(first)), copy.copy(first), copy.deepcopy(first)):
        assert "_hash" not in moved.__dict__ and moved == first and hash(moved) == hash(first)
    assert {first: 1}[same] == 1


def test_dimension_paths_and_cte_names_are_worked_out_once_per_model(tmp_path, monkeypatch):
    from kpi_engine import resolve

    folder = _write(tmp_path / "p", RATIO_KPIS)
    fresh = open_project(folder).compile(["big_share"], grain="month").sql()
    asked = []
    paths = resolve.dimension_paths
    monkeypatch.setattr(resolve, "dimension_paths", lambda sources, name, **kw: asked.append(name) or
                        paths(sources, name, **kw))
    with open_project(folder) as project:
        model = project.model()
        asked.clear()  # (resolving the model asks too)
        texts = [project.compile(["big_share"], grain="month").sql() for _ in range(3)]
        assert asked == ["orders"] and model.derived[("cte", "orders")] == "orders_agg"
    assert texts == [fresh] * 3


def test_copy_of_gives_what_sqlglot_copy_gives():
    from sqlglot import exp

    from kpi_engine.calendar import Calendar, cast
    from kpi_engine.sql_build import col, copy_of

    commented = col("amount", "orders")
    commented.comments = ["paid"]
    typed = col("amount", "orders")
    typed.type = "DECIMAL(10, 2)"
    nodes = [col("amount", "orders"), col("amount"), exp.column("amount", "orders"), commented, typed,
             exp.Column(this=exp.Identifier(this="a", quoted=True), table=exp.Identifier(this="", quoted=True)),
             cast(col("created_at", "leads"), "DATE"), cast(cast(col("at", "t"), "TIMESTAMP"), "DATE"),
             exp.Cast(this=col("a"), to=exp.DataType.build("DECIMAL(10, 2)")),
             Calendar().bucket(col("created_at", "leads"), "month", "duckdb"), exp.Literal.number(1),
             Calendar().bucket(col("day", "spend"), "quarter", "duckdb", is_date=True),  # DateTrunc: sqlglot copies it
             exp.DateTrunc(this=col("d"), unit=exp.Literal.string("Q"), unabbreviate=False),  # kept as 'Q'
             exp.Coalesce(this=col("a", "t"), expressions=[exp.Literal.number(0), col("b")]),
             exp.In(this=col("channel"), expressions=[exp.Literal.string("ppc"), exp.Literal.string("seo")]),
             exp.and_(exp.GT(this=col("a"), expression=exp.Literal.number(1)), exp.Paren(this=commented.copy())),
             exp.Anonymous(this="TRUNC", expressions=[typed.copy(), exp.Literal.string("MM")])]
    for node in nodes:
        original = node.copy()
        copied, expected = copy_of(node), node.copy()
        assert copied == expected and copied.sql("duckdb") == expected.sql("duckdb")
        assert copied.comments == expected.comments and copied.type == expected.type
        assert copied.parent is None and node == original  # a new tree; the node left as it was
        assert not {id(x) for x in copied.walk()} & {id(x) for x in node.walk()}
        for a, b in zip(copied.walk(), expected.walk()):  # node by node: same class, arguments, parents' keys
            assert type(a) is type(b) and a.arg_key == b.arg_key and a.index == b.index
            assert {k for k, v in a.args.items() if v is not None} == {k for k, v in b.args.items() if v is not None}
            assert a.comments == b.comments and a.type == b.type


def test_the_rewrites_walks_find_what_sqlglot_finds_in_the_same_order():
    """tree_walk (used by the rewrites on every compile) against sqlglot's find_all: the same
    columns in the same order (their order decides the order of the columns a rewrite writes),
    the same tables, and no answer when a WITH inside scopes names anew."""
    import sqlglot
    from sqlglot import exp

    from kpi_engine.tree_walk import columns_in, tables_in

    trees = [sqlglot.parse_one(text, read="duckdb") for text in (
        "SELECT a.x, b.y, ROWNUM FROM a JOIN (SELECT y, z FROM c WHERE c.z > 1) AS b ON a.k = b.k",
        "SELECT CAST(DATE_TRUNC('month', t.at) AS DATE) AS p, SUM(t.v) FILTER(WHERE t.s IN ('a', 'b')) FROM t GROUP BY 1",
        "SELECT * FROM x UNION ALL SELECT q.* FROM (SELECT 1 AS one) AS q",
        "SELECT x.a FROM x WHERE x.a IN (SELECT y.a FROM y)")]
    pseudo = exp.Pseudocolumn(this=exp.Identifier(this="ROWNUM"))  # a Column to find_all
    trees.append(exp.select(pseudo, exp.column("a", "t")).from_("t").where(exp.GT(this=pseudo.copy(),
                                                                                  expression=exp.Literal.number(2))))
    with open_project(Path(__file__).resolve().parents[1] / "examples" / "marketing") as project:
        for name in list(project.model().kpis)[:20]:
            trees.append(project.compile([name], by=["channel"], grain="month").expression)
    for tree in trees:
        assert [id(c) for c in columns_in(tree)] == [id(c) for c in tree.find_all(exp.Column)]
        tables = tables_in(tree)
        if tree.find(exp.With) is not None:
            assert tables is None
        else:
            assert sorted(map(id, tables)) == sorted(id(t) for t in tree.find_all(exp.Table))
    assert any(isinstance(c, exp.Pseudocolumn) for c in columns_in(trees[4]))
    assert columns_in(exp.Column(this=exp.Identifier(this="a"))) != []
