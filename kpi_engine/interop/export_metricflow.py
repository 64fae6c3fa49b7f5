"""A kpi-engine project -> dbt MetricFlow semantic models and metrics (docs/dbt.md#export).

Each source becomes a semantic model (its key the primary entity, named after the source; each
relationship a foreign entity named after the source it reaches; its dimensions and time columns
as dimensions), each aggregate a measure, each KPI a metric: one aggregate is a simple metric, a
quotient of two a ratio metric, other arithmetic a derived metric (``previous(x, '1 month')`` as an
``offset_window``, ``at_start(x, 'month')`` as ``offset_to_grain``), ``cumulative``/``rolling`` of an
aggregate a cumulative metric. An aggregate's ``where`` becomes the metric's filter. What MetricFlow
cannot say is reported and left out.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import nodes as n
from ..files import write_atomically
from ..parser import parse
from ..spec import SourceSpec, load_project
from . import IDENTIFIER, Report, Untranslatable, dump

AGGREGATES = {"sum": "sum", "count": "count", "count_distinct": "count_distinct", "avg": "average", "min": "min",
              "max": "max", "median": "median", "percentile": "percentile", "approx_percentile": "percentile",
              "last": "sum", "first": "sum"}
_UNITS = ("day", "week", "month", "quarter", "year")


class Export:
    def __init__(self, project):
        self.project = project
        self.report = Report()
        self.models: dict[str, dict] = {}
        self.measures: dict[tuple, str] = {}  # measure key -> name
        self.metrics: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self.subsets: dict[str, str] = {}  # a source that extends another -> the semantic model of its rows

    def where(self, obj) -> tuple[str, int | None]:
        location = obj.where(key=True)
        return location.file or "", location.line

    # -- sources -> semantic models
    def semantic_models(self) -> None:
        subsets = {}
        for name, source in self.project.sources.items():
            if source.axis_of:
                continue  # the views of a time axis are time dimensions of their source
            # Neither a conversion source nor rows placed by another time column is a subset of its
            # rows source's measures: exported as one, its counts would be the other source's.
            why = ("a conversion source is not exported (its windowed matching has no measure or filter "
                   "equivalent)" if source.conversion is not None else
                   f"it places the rows of source '{source.rows_of}' by another time column ('{source.time}'), "
                   "and a MetricFlow subset keeps its source's time"
                   if source.rows_of and source.time != self.project.sources[source.rows_of].time else None)
            if why:
                file, line = self.where(source)
                self.report.skip(file, line, f"source '{name}'", why)
                continue
            if source.rows_of:  # the rows of another source: its measures, filtered by metric filters
                subsets[name] = source
                continue
            try:
                self.models[name] = self._model(source)
            except Untranslatable as why:
                file, line = self.where(source)
                self.report.skip(file, line, f"source '{name}'", str(why))
        for name, source in subsets.items():
            if source.rows_of in self.models:
                self.subsets[name] = source.rows_of
            else:
                file, line = self.where(source)
                self.report.skip(file, line, f"source '{name}'", f"it reads the rows of source '{source.rows_of}', "
                                 "which is not exported")

    def _model(self, source: SourceSpec) -> dict:
        if source.unmapped:
            raise Untranslatable("it is unmapped (no data)")
        if source.time_end:
            raise Untranslatable("an interval source (time_end: a row counts in every period it is active in) has "
                                 "no MetricFlow equivalent")
        if source.extends or source.filters:
            raise Untranslatable("MetricFlow semantic models have no row filter ('where'/'extends'); put the "
                                 "condition in a dbt model and read that")
        if source.sql or not (source.model or source.table):
            raise Untranslatable("MetricFlow reads dbt models; a 'sql:' source has none (make it a dbt model)")
        if any(not _is_column(formula.text) for formula in source.column_map.values()):
            raise Untranslatable("its map: formulas are not exported (a column renamed is)")
        model_name = source.model or source.table.split(".")[-1]
        if not source.model:
            file, line = self.where(source)
            self.report.note(file, line, f"source '{source.name}'", f"table '{source.table}' is written as "
                             f"ref('{model_name}'): MetricFlow reads dbt models")
        body: dict[str, Any] = {"name": source.name}
        if source.description:
            body["description"] = source.description
        body["model"] = f"ref('{model_name}')"
        entities = []
        if len(source.primary_key) == 1:
            entities.append({"name": source.name, "type": "primary", "expr": self.column(source, source.primary_key[0])})
        for relation in source.relationships:
            entities.append({"name": relation.to, "type": "foreign", "expr": self.column(source, relation.on)})
        body["entities"] = entities
        dims: list[dict] = []
        for axis in (source.time, *source.time_axes):
            if axis:
                dims.append(_dimension(axis, self.column(source, axis), "time"))
        for dim in source.dimensions:
            dims.append(_dimension(dim.name, self.column(source, dim.column), "categorical"))
        body["dimensions"] = dims
        body["measures"] = []
        if source.time:
            body["defaults"] = {"agg_time_dimension": source.time}
        return body

    def column(self, source: SourceSpec, name: str) -> str:
        mapped = source.column_map.get(name)
        return mapped.text.strip() if mapped is not None else name

    # -- KPIs -> metrics
    def kpi(self, name: str, chain: tuple = ()) -> str:
        if name in self.metrics:
            return name
        if name in self.failed or name in chain:
            raise Untranslatable(f"it uses KPI '{name}', which is not exported")
        spec = self.project.kpis.get(name)
        if spec is None:
            raise Untranslatable(f"'{name}' is not a KPI")
        try:
            metric = self._metric(name, parse(spec.formula), chain + (name,))
        except Untranslatable as why:
            self.failed[name] = str(why)
            file, line = self.where(spec)
            self.report.skip(file, line, f"KPI '{name}'", str(why))
            raise Untranslatable(f"it uses KPI '{name}', which is not exported") from None
        for key in ("label", "description"):
            if getattr(spec, key):
                metric[key] = getattr(spec, key)
        if spec.fill_nulls_with is not None and metric["type"] == "simple":
            metric["type_params"]["measure"] = {"name": metric["type_params"]["measure"],
                                                "fill_nulls_with": spec.fill_nulls_with}
        self.metrics[name] = {"name": name, **metric}
        return name

    def _metric(self, name: str, node: n.Node, chain: tuple) -> dict:
        if _is_aggregate(node):
            measure, source, condition = self.measure(node)
            metric = {"type": "simple", "type_params": {"measure": measure}}
            if condition:
                metric["filter"] = condition
            return metric
        if isinstance(node, n.Call) and node.name in ("cumulative", "rolling"):
            return self._cumulative(name, node, chain)
        if isinstance(node, n.Binary) and node.op == "/" and self._plain(node.left) and self._plain(node.right):
            return {"type": "ratio", "type_params": {"numerator": self.input(name, node.left, chain),
                                                      "denominator": self.input(name, node.right, chain)}}
        inputs: list[dict] = []
        expr = self._expression(name, node, chain, inputs)
        return {"type": "derived", "type_params": {"expr": expr, "metrics": inputs}}

    def _plain(self, node: n.Node) -> bool:
        return _is_aggregate(node) or (isinstance(node, n.Name) and len(node.parts) == 1)

    def input(self, owner: str, node: n.Node, chain: tuple) -> Any:
        """A ratio's numerator or denominator: a metric name, or {name, filter} of an aggregate."""
        if isinstance(node, n.Name):
            return self.kpi(node.parts[0], chain)
        measure, _, condition = self.measure(node)
        return self._helper(owner, measure, condition)

    def _helper(self, owner: str, measure: str, condition: str | None) -> Any:
        """A simple metric for an aggregate written inside another KPI (MetricFlow's inputs are metrics)."""
        name = f"{owner}__{measure}"
        if name not in self.metrics:
            self.metrics[name] = {"name": name, "type": "simple", "type_params": {"measure": measure},
                                  "label": f"{measure} (input of {owner})"}
        return {"name": name, "filter": condition} if condition else name

    def _expression(self, owner: str, node: n.Node, chain: tuple, inputs: list[dict]) -> str:
        if isinstance(node, n.NumberLit):
            return str(node.value)
        if isinstance(node, n.Unary) and node.op == "-":
            return f"-({self._expression(owner, node.operand, chain, inputs)})"
        if isinstance(node, n.Binary):
            left = self._expression(owner, node.left, chain, inputs)
            right = self._expression(owner, node.right, chain, inputs)
            return f"({left} {node.op} {right})"
        if isinstance(node, n.Call) and node.name in ("coalesce", "nullif", "abs", "round", "least", "greatest"):
            return f"{node.name}({', '.join(self._expression(owner, a, chain, inputs) for a in node.args)})"
        if isinstance(node, n.Call) and node.name in ("previous", "at_start"):
            return self._offset(owner, node, chain, inputs)
        if isinstance(node, n.Name) or _is_aggregate(node):
            return self._add_input(owner, node, chain, inputs, {})
        raise Untranslatable(f"'{_shown(node)}' has no MetricFlow equivalent in a derived metric's expression")

    def _add_input(self, owner: str, node: n.Node, chain: tuple, inputs: list[dict], extra: dict) -> str:
        item = self.input(owner, node, chain)
        entry = dict(item) if isinstance(item, dict) else {"name": item}
        entry.update(extra)
        alias = entry["name"] if not extra and "filter" not in entry else f"{entry['name']}_{len(inputs) + 1}"
        if alias != entry["name"]:
            entry["alias"] = alias
        if entry not in inputs:
            inputs.append(entry)
        return entry.get("alias", entry["name"])

    def _offset(self, owner: str, node: n.Call, chain: tuple, inputs: list[dict]) -> str:
        if len(node.args) != 2 or not isinstance(node.args[1], n.StringLit):
            raise Untranslatable(f"'{_shown(node)}': MetricFlow offsets are lengths of time; previous(x, N) "
                                 "periods depends on the request's grain (write previous(x, '1 month'))")
        operand = node.args[0]
        if not self._plain(operand):
            raise Untranslatable(f"'{_shown(node)}' offsets an expression; offset a KPI instead")
        text = node.args[1].value.strip().lower()
        if node.name == "previous":
            match = re.fullmatch(r"(\d+)\s+(day|week|month|quarter|year)s?", text)
            if not match:
                raise Untranslatable(f"'{text}' is not a length MetricFlow reads")
            return self._add_input(owner, operand, chain, inputs, {"offset_window": f"{match.group(1)} "
                                                                                     f"{match.group(2)}"})
        return self._add_input(owner, operand, chain, inputs, {"offset_to_grain": text})

    def _cumulative(self, owner: str, node: n.Call, chain: tuple) -> dict:
        operand = node.args[0] if node.args else None
        if isinstance(operand, n.Name) and len(operand.parts) == 1 and operand.parts[0] in self.project.kpis:
            inner = parse(self.project.kpis[operand.parts[0]].formula)
            operand = inner if _is_aggregate(inner) else operand
        if not _is_aggregate(operand):
            raise Untranslatable(f"'{_shown(node)}': MetricFlow accumulates one measure, not an expression of "
                                 "several")
        measure, _, condition = self.measure(operand)
        params: dict[str, Any] = {}
        if node.name == "rolling":
            if len(node.args) != 2 or not isinstance(node.args[1], n.StringLit):
                raise Untranslatable(f"'{_shown(node)}': a window of N periods depends on the grain; write a length "
                                     "of time ('7 days')")
            params["window"] = node.args[1].value.strip()
            spec = self.project.kpis[owner]
            file, line = self.where(spec)
            self.report.note(file, line, f"KPI '{owner}'", "exported as a cumulative metric with a window: the same "
                             "at the window's own grain (days for days); at coarser grains MetricFlow reads the "
                             "window ending on the period's last day (period_agg: last)")
        elif len(node.args) == 2:
            if not isinstance(node.args[1], n.StringLit) or node.args[1].value not in _UNITS[1:]:
                raise Untranslatable(f"'{_shown(node)}': MetricFlow's grain_to_date is week, month, quarter or year")
            params["grain_to_date"] = node.args[1].value
        params["period_agg"] = "last"  # kpi-engine shows a period's value at its end
        metric: dict[str, Any] = {"type": "cumulative", "type_params": {"measure": measure,
                                                                        "cumulative_type_params": params}}
        if condition:
            metric["filter"] = condition
        return metric

    # -- aggregates -> measures
    def measure(self, node: n.Call) -> tuple[str, str, str | None]:
        """(measure name, semantic model, filter) of an aggregate, adding the measure to its semantic
        model. A source that extends another is that source's measure, its conditions in the filter."""
        func = node.name
        target = node.args[0] if node.args else None
        if target is None:
            raise Untranslatable(f"'{_shown(node)}' has no argument")
        names = [item for item in target.walk() if isinstance(item, n.Name)]
        source_name = names[0].parts[0] if names else None
        home = self.subsets.get(source_name, source_name)
        if home not in self.models:
            raise Untranslatable(f"it reads source '{source_name}', which is not exported")
        source, base = self.project.sources[source_name], self.project.sources[home]
        model = self.models[home]
        if func in ("last", "first") and source.time_end:
            raise Untranslatable("an interval source (time_end) has no MetricFlow equivalent")
        if isinstance(target, n.Name) and len(target.parts) == 1:
            expr, label = "1", "rows"
        else:
            def column(name: n.Name) -> str:
                if name.parts[0] != source_name or len(name.parts) != 2:
                    raise Untranslatable(f"'{name.dotted}' is not a column of source '{source_name}'")
                return self.column(base, name.parts[1])

            expr = _sql(target, column)
            expr = expr[1:-1] if expr.startswith("(") and expr.endswith(")") and not isinstance(target, n.Name) \
                else expr
            label = re.sub(r"[^A-Za-z0-9]+", "_", expr).strip("_")[:40] or "value"
        fraction = None
        if func in ("percentile", "approx_percentile"):
            if len(node.args) != 2 or not isinstance(node.args[1], n.NumberLit):
                raise Untranslatable(f"'{_shown(node)}' needs a constant fraction")
            fraction = float(node.args[1].value)
        at = node.at or (source.time if source.time != base.time else None)
        if at and at not in {d["name"] for d in model["dimensions"]}:
            model["dimensions"].append(_dimension(at, self.column(base, at), "time"))
        key = (home, func, expr, at, node.per, fraction)
        if key not in self.measures:
            suffix = (f"_at_{at}" if at else "") + (f"_per_{node.per}" if node.per else "") + \
                     (f"_{round(fraction * 100)}" if fraction else "")
            name = f"{home}__{func}_{label}{suffix}"
            while name in self.measures.values():
                name += "_"
            measure: dict[str, Any] = {"name": name, "agg": AGGREGATES[func], "expr": expr}
            if fraction is not None:
                measure["agg_params"] = {"percentile": fraction, "use_discrete_percentile": False}
                if func == "approx_percentile":
                    measure["agg_params"]["use_approximate_percentile"] = True
            if at:
                measure["agg_time_dimension"] = at
            if func in ("last", "first"):
                if not base.time:
                    raise Untranslatable(f"source '{home}' has no time column")
                if expr == "1":
                    measure["agg"] = "count"
                snapshot: dict[str, Any] = {"name": at or base.time, "window_choice": "max" if func == "last" else "min"}
                if node.per:
                    snapshot["window_groupings"] = [self._entity(model, base, node.per)]
                measure["non_additive_dimension"] = snapshot
            model["measures"].append(measure)
            self.measures[key] = name
        conditions = [parse(formula.text) for formula in source.filters]
        if node.where is not None:
            conditions.append(node.where)
        condition = " and ".join(self.condition(base, model, item, source_name) for item in conditions)
        return self.measures[key], home, condition or None

    def _entity(self, model: dict, source: SourceSpec, key: str) -> str:
        column = self.column(source, key)
        for entity in model["entities"]:
            if entity["expr"] == column:
                return entity["name"]
        model["entities"].append({"name": key, "type": "foreign", "expr": column})
        return key

    def condition(self, source: SourceSpec, model: dict, node: n.Node, alias: str | None = None) -> str:
        """A filter over the source's columns, with each column a Dimension of its semantic model."""
        primary = next((e["name"] for e in model["entities"] if e["type"] == "primary"), None)
        if primary is None:
            raise Untranslatable(f"a filter needs source '{source.name}' to have a primary key (MetricFlow names a "
                                 "dimension through its semantic model's primary entity)")

        def column(name: n.Name) -> str:
            if len(name.parts) > 2 or (len(name.parts) == 2 and name.parts[0] not in (source.name, alias)):
                raise Untranslatable(f"the filter reads '{name.dotted}', not a column of '{source.name}'")
            col = name.parts[-1]
            dims = {d["name"]: d for d in model["dimensions"]}
            if col not in dims:
                model["dimensions"].append(_dimension(col, self.column(source, col), "categorical"))
            elif dims[col]["type"] == "time":
                grain = dims[col]["type_params"]["time_granularity"]
                return f"{{{{ TimeDimension('{primary}__{col}', '{grain}') }}}}"
            return f"{{{{ Dimension('{primary}__{col}') }}}}"

        return _sql(node, column)


def _dimension(name: str, expr: str, kind: str) -> dict:
    dim: dict[str, Any] = {"name": name, "type": kind}
    if expr != name:
        dim["expr"] = expr
    if kind == "time":
        dim["type_params"] = {"time_granularity": "day"}
    return dim


def _is_column(text: str) -> bool:
    return bool(IDENTIFIER.match(text.strip()))


def _is_aggregate(node: Any) -> bool:
    return isinstance(node, n.Call) and node.name in AGGREGATES and bool(node.args)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _sql(node: n.Node, column) -> str:
    """A row condition in SQL, columns written by ``column``."""
    if isinstance(node, n.Name):
        return column(node)
    if isinstance(node, (n.NumberLit, n.StringLit)):
        return _literal(node.value)
    if isinstance(node, n.BoolLit):
        return "true" if node.value else "false"
    if isinstance(node, n.NullLit):
        return "null"
    if isinstance(node, n.Unary):
        return f"not ({_sql(node.operand, column)})" if node.op == "not" else f"-({_sql(node.operand, column)})"
    if isinstance(node, (n.Binary, n.Compare, n.Logical)):
        op = {"==": "=", "<>": "!="}.get(node.op, node.op)
        return f"({_sql(node.left, column)} {op} {_sql(node.right, column)})"
    if isinstance(node, n.InList):
        items = ", ".join(_sql(item, column) for item in node.items)
        return f"({_sql(node.operand, column)} {'not in' if node.negated else 'in'} ({items}))"
    if isinstance(node, n.Between):
        word = "not between" if node.negated else "between"
        return f"({_sql(node.operand, column)} {word} {_sql(node.low, column)} and {_sql(node.high, column)})"
    if isinstance(node, n.IsNull):
        return f"({_sql(node.operand, column)} is {'not ' if node.negated else ''}null)"
    raise Untranslatable(f"'{_shown(node)}' has no MetricFlow equivalent in a filter or a measure's expression "
                         "(a per-entity aggregate, a function)")


def _shown(node: n.Node) -> str:
    if isinstance(node, n.Name):
        return node.dotted
    if isinstance(node, n.Call):
        return f"{node.name}(...)"
    return type(node).__name__.lower()


def export_metricflow(project_path: Path, out: Path) -> Report:
    project = load_project(project_path)
    exporter = Export(project)
    exporter.semantic_models()
    for name in project.kpis:
        try:
            exporter.kpi(name)
        except Untranslatable:
            pass  # reported where it failed
    models = list(exporter.models.values())
    out.mkdir(parents=True, exist_ok=True)
    header = f"Exported from the kpi-engine project '{project.config.name}' by kpi-engine export metricflow."
    files = []
    if models:
        write_atomically(out / "semantic_models.yml", dump({"semantic_models": models}, header))
        files.append(str(out / "semantic_models.yml"))
    if exporter.metrics:
        write_atomically(out / "metrics.yml", dump({"metrics": list(exporter.metrics.values())}, header))
        files.append(str(out / "metrics.yml"))
    report = exporter.report
    report.sources, report.kpis, report.files = list(exporter.models), list(exporter.metrics), files
    return report
