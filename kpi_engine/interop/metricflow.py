"""dbt MetricFlow semantic models and metrics -> kpi-engine sources and KPIs (docs/dbt.md).

A semantic model becomes a source (its dbt model through ``model:``, its agg_time_dimension as
``time``, other time dimensions as ``time_axes``, its primary entity as the key, foreign entities
as relationships to the sources whose primary entity they name). A measure becomes an aggregate
written into the KPIs that use it; a metric becomes a KPI. What has no exact equivalent is
reported with its file and line and left out, never approximated silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dbt import read_yaml
from ..errors import UsageError
from . import IDENTIFIER, NOT_TRANSLATED, Report, Untranslatable, mappings, why_not, column_of, formula_of, need_folder, write_project, yaml_files

AGGREGATES = {"sum": "sum", "average": "avg", "avg": "avg", "min": "min", "max": "max",
              "count_distinct": "count_distinct", "median": "median"}
_REF = re.compile(r"""^\s*ref\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*(?:,\s*(?:v|version)\s*=\s*\S+\s*)?\)\s*$""")
_JINJA = re.compile(r"\{\{\s*(Dimension|TimeDimension|Entity|Metric)\((.*?)\)\s*(\.[^}]*)?\}\}")
_GRAINS = ("day", "week", "month", "quarter", "year")


@dataclass
class SemanticModel:
    name: str
    file: str
    line: int | None
    body: dict
    time: str | None = None  # the agg_time_dimension's column
    dims: dict[str, str] = field(default_factory=dict)  # dimension name -> the name formulas read
    time_dims: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (column, granularity)
    entities: dict[str, str] = field(default_factory=dict)  # entity name -> column
    primary: str | None = None  # the primary entity's name
    measures: dict[str, dict] = field(default_factory=dict)
    map: dict[str, str] = field(default_factory=dict)
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)  # the file's lines, by YAML path
    base: tuple = ()  # this model's YAML path

    def line_of(self, *path) -> int | None:
        return self.lines.get(self.base + path, self.line)


class MetricFlowImport:
    def __init__(self, path: Path, tables: bool = False):
        self.root = path if path.is_dir() else path.parent
        self.tables = tables
        self.report = Report()
        self.models: dict[str, SemanticModel] = {}
        self.metrics: dict[str, tuple[dict, str, int | None]] = {}
        self.measure_model: dict[str, str] = {}
        self.kpis: dict[str, dict] = {}
        self.failed: dict[str, str] = {}  # metric -> why it is not translated
        self.sources: dict[str, dict] = {}
        for file in yaml_files(path):
            self._read(file)

    def _shown(self, file: Path) -> str:
        try:
            return str(file.relative_to(self.root))
        except ValueError:
            return str(file)

    def _read(self, file: Path) -> None:
        shown = self._shown(file)
        data, lines = read_yaml(file, shown)
        if not isinstance(data, dict):
            return
        for i, body in mappings(data.get("semantic_models")):
            if isinstance(body, dict) and isinstance(body.get("name"), str):
                self.models[body["name"]] = SemanticModel(body["name"], shown, lines.get(("semantic_models", i)), body,
                                                          lines=lines, base=("semantic_models", i))
        for i, body in mappings(data.get("metrics")):
            if isinstance(body, dict) and isinstance(body.get("name"), str):
                self.metrics[body["name"]] = (body, shown, lines.get(("metrics", i)))
        for i, body in mappings(data.get("models")):
            if body.get("semantic_model") not in (None, False):
                self.report.skip(shown, lines.get(("models", i)), f"semantic model of model '{body.get('name')}'",
                                 "it is written in dbt's latest YAML spec (semantic_model: on a model, dbt 1.12 and "
                                 "Fusion), which is not read yet; kpi-engine reads the standalone spec "
                                 "(semantic_models: with measures, dbt 1.6 to 1.11 and still accepted by 1.12)")
        for i, body in mappings(data.get("saved_queries")):
            self.report.skip(shown, lines.get(("saved_queries", i)), f"saved query '{body.get('name')}'",
                             "saved queries are not imported; write them under 'queries:' (docs/specs.md)")

    # -- semantic models -> sources
    def translate(self) -> tuple[dict, dict]:
        for model in self.models.values():
            try:
                self.sources[model.name] = self._source(model)
            except NOT_TRANSLATED as why:
                self.report.skip(model.file, model.line, f"semantic model '{model.name}'", why_not(why))
        for model in self.models.values():  # relationships need every primary entity known
            if model.name in self.sources:
                self._relationships(model)
        for model in self.models.values():
            for _, measure in mappings(model.body.get("measures")):
                if isinstance(measure, dict) and measure.get("name"):
                    model.measures[measure["name"]] = measure
                    self.measure_model[measure["name"]] = model.name
                    if measure.get("create_metric") and measure["name"] not in self.metrics:
                        self.metrics[measure["name"]] = ({"name": measure["name"], "type": "simple",
                                                          "type_params": {"measure": measure["name"]}},
                                                         model.file, model.line)
        for name in self.metrics:
            self._metric(name, ())
        return self.sources, self.kpis

    def _source(self, model: SemanticModel) -> dict:
        body = model.body
        match = _REF.match(str(body.get("model") or ""))
        if not match:
            raise Untranslatable(f"its model '{body.get('model')}' is not ref('name')")
        source: dict[str, Any] = {"label": str(body["label"])} if body.get("label") else {}
        if body.get("description"):
            source["description"] = str(body["description"]).strip()
        source["table" if self.tables else "model"] = match.group(1)
        if any(isinstance((d.get("type_params") or {}).get("validity_params"), dict)
               for _, d in mappings(body.get("dimensions"))):
            raise Untranslatable("it is a slowly changing dimension (validity_params): joining it needs the version "
                                 "valid at each row's time, which a kpi-engine relationship does not do yet")
        for index, dim in mappings(body.get("dimensions")):
            name = dim.get("name")
            try:
                if dim.get("type") == "time":
                    column = column_of(dim.get("expr"), name, f"time dimension '{name}'")
                    grain = (dim.get("type_params") or {}).get("time_granularity")
                    model.time_dims[name] = (column, grain)
                    continue
                expr = dim.get("expr")
                if expr is None or IDENTIFIER.match(str(expr).strip()):
                    model.dims[name] = name
                    column = str(expr).strip() if expr is not None else name
                    source.setdefault("dimensions", []).append(name if column == name else
                                                               {"name": name, "column": column})
                else:
                    model.map[name] = formula_of(str(expr), f"expression of dimension '{name}'")
                    model.dims[name] = name
                    source.setdefault("dimensions", []).append(name)
            except NOT_TRANSLATED as why:
                self.report.skip(model.file, model.line_of("dimensions", index), f"dimension '{model.name}.{name}'",
                                 why_not(why))
        default = (body.get("defaults") or {}).get("agg_time_dimension")
        if default is None and len(model.time_dims) == 1:
            default = next(iter(model.time_dims))
        if default is not None:
            if default not in model.time_dims:
                raise Untranslatable(f"its agg_time_dimension '{default}' is not one of its time dimensions")
            model.time = model.time_dims[default][0]
            source["time"] = model.time
            axes = sorted({column for column, _ in model.time_dims.values()} - {model.time})
            if axes:
                source["time_axes"] = axes
        for index, entity in mappings(body.get("entities")):
            name = entity.get("name")
            try:
                column = column_of(entity.get("expr"), name, f"expression of entity '{name}'")
            except NOT_TRANSLATED as why:
                self.report.skip(model.file, model.line_of("entities", index), f"entity '{model.name}.{name}'", why_not(why))
                continue
            model.entities[name] = column
            if entity.get("type") in ("primary", "unique", "natural") and model.primary is None:
                model.primary = name
                source["primary_key"] = column
        if model.map:
            source["map"] = dict(model.map)
        return source

    def _relationships(self, model: SemanticModel) -> None:
        for _, entity in mappings(model.body.get("entities")):
            name = entity.get("name")
            if entity.get("type") != "foreign" or name not in model.entities:
                continue
            target = next((m for m in self.models.values() if m.primary == name and m.name in self.sources
                           and m.name != model.name), None)
            if target is None:
                continue  # an entity no semantic model is keyed by: nothing to join to
            relation = {"to": target.name, "on": model.entities[name]}
            if target.entities[name] != model.entities[name]:
                relation["to_column"] = target.entities[name]
            self.sources[model.name].setdefault("relationships", []).append(relation)

    # -- measures -> aggregates
    def aggregate(self, measure_name: str, filters: list[str]) -> str:
        if measure_name not in self.measure_model:
            raise Untranslatable(f"measure '{measure_name}' is not defined in any semantic model")
        model = self.models[self.measure_model[measure_name]]
        if model.name not in self.sources:
            raise Untranslatable(f"its semantic model '{model.name}' is not translated")
        measure = model.measures[measure_name]
        agg = measure.get("agg")
        expr = measure.get("expr", measure_name)
        conditions = [self.filter_condition(text, model) for text in filters]
        column: str | None = self._argument(model, measure_name, expr, agg)
        extra = ""
        if agg == "sum_boolean":  # SUM(CASE WHEN x THEN 1 ELSE 0 END): the rows where x holds
            conditions.insert(0, column)
            call, column = "count", None
        elif agg == "count":
            call = "count"
            if column in ("1", "*"):
                column = None
        elif agg == "percentile":
            params = measure.get("agg_params") or {}
            if params.get("use_discrete_percentile"):
                raise Untranslatable("a discrete percentile (use_discrete_percentile) has no equivalent; "
                                     "kpi-engine's percentile() interpolates (PERCENTILE_CONT)")
            call = "approx_percentile" if params.get("use_approximate_percentile") else "percentile"
            extra = f", {float(params.get('percentile'))!r}"
        elif agg in AGGREGATES:
            call = AGGREGATES[agg]
        else:
            raise Untranslatable(f"aggregation '{agg}' of measure '{measure_name}' has no equivalent")
        at = ""
        own_time = measure.get("agg_time_dimension")
        if own_time and own_time not in model.time_dims:
            raise Untranslatable(f"agg_time_dimension '{own_time}' of measure '{measure_name}' is not a time "
                                 f"dimension of '{model.name}'")
        if own_time and model.time_dims[own_time][0] != model.time:
            at = f" at {model.time_dims[own_time][0]}"
        per = ""
        if measure.get("non_additive_dimension"):
            if agg == "count" and column is not None:  # last(x.col) would add the column up
                raise Untranslatable(f"a non-additive count of '{column}' has no equivalent (last(source) counts "
                                     "the snapshot's rows; use expr: 1)")
            call, per = self._snapshot(model, measure_name, measure["non_additive_dimension"], agg, at)
        where = f" where {' and '.join(f'({c})' for c in conditions)}" if conditions else ""
        target = f"{model.name}.{column}" if column else model.name
        return f"{call}({target}{extra}{at}{where}{per})"

    def _argument(self, model: SemanticModel, measure_name: str, expr: Any, agg: str) -> str:
        text = str(expr).strip()
        if IDENTIFIER.match(text) or text in ("1", "*"):
            return text
        if agg == "count" and text.lower() in ("1", "count(*)"):
            return "1"
        name = measure_name if measure_name not in model.dims else f"{measure_name}_value"
        model.map[name] = formula_of(text, f"expression of measure '{measure_name}'")
        self.sources[model.name]["map"] = dict(model.map)
        return name

    def _snapshot(self, model: SemanticModel, measure_name: str, spec: Any, agg: str, at: str) -> tuple[str, str]:
        spec = spec if isinstance(spec, dict) else {"name": spec}
        dim = model.time_dims.get(spec.get("name"))
        if dim is None or dim[0] != model.time or at:
            raise Untranslatable(f"non_additive_dimension '{spec.get('name')}' of measure '{measure_name}' is not its "
                                 "agg_time_dimension; kpi-engine's last()/first() read the source's time")
        if agg not in ("sum", "count"):
            raise Untranslatable(f"a non-additive '{agg}' has no equivalent (last()/first() add up the snapshot rows)")
        choice = str(spec.get("window_choice", "max")).lower()
        call = {"max": "last", "min": "first"}.get(choice)
        if call is None:
            raise Untranslatable(f"window_choice '{choice}' is not min or max")
        groupings = spec.get("window_groupings") or []
        if len(groupings) > 1:
            raise Untranslatable("window_groupings of more than one entity have no equivalent "
                                 "(last(x per key) takes one key)")
        per = ""
        if groupings:
            if groupings[0] not in model.entities:
                raise Untranslatable(f"window grouping '{groupings[0]}' is not an entity of '{model.name}'")
            per = f" per {model.entities[groupings[0]]}"
        return call, per

    def filter_condition(self, text: Any, model: SemanticModel) -> str:
        """A MetricFlow filter (Jinja references in SQL) as a condition over ``model``'s columns."""
        def replace(match: re.Match) -> str:
            kind, args, method = match.groups()
            if method:
                raise Untranslatable(f"'{match.group(0)}' calls '{method}' on a reference, which is not translated")
            names = re.findall(r"""['"]([^'"]*)['"]""", args)
            if kind == "Metric" or not names:
                raise Untranslatable(f"'{match.group(0)}' filters on a metric's value; kpi-engine filters rows")
            path = names[0].split("__")
            if kind == "Entity":
                if len(path) == 1 and path[0] in model.entities:
                    return model.entities[path[0]]
                raise Untranslatable(f"entity '{names[0]}' is not an entity of semantic model '{model.name}'")
            if len(path) != 2 or path[0] not in model.entities:
                raise Untranslatable(f"'{names[0]}' is reached through entities other than '{model.name}''s own "
                                     "(a filter on a joined model's dimension is not translated)")
            dim = path[1]
            if kind == "TimeDimension" or dim in model.time_dims:
                if dim not in model.time_dims:
                    raise Untranslatable(f"'{dim}' is not a time dimension of '{model.name}'")
                column, grain = model.time_dims[dim]
                asked = names[1] if len(names) > 1 else None
                if asked and asked != (grain or "day"):
                    raise Untranslatable(f"'{match.group(0)}' truncates '{dim}' to {asked}s, which a row "
                                         "filter does not do")
                return column
            if dim not in model.dims:
                owner = next((m.name for m in self.models.values() if m.primary == path[0] and dim in m.dims), None)
                if owner and owner != model.name:
                    raise Untranslatable(f"'{names[0]}' is a dimension of semantic model '{owner}', reached through "
                                         f"entity '{path[0]}'; a filter inside a kpi-engine aggregate reads its own "
                                         "source's columns only (slice by it with --by/--where instead)")
                raise Untranslatable(f"'{dim}' is not a dimension of semantic model '{model.name}'")
            return model.dims[dim]

        sql = _JINJA.sub(replace, str(text))
        if "{{" in sql or "{%" in sql:
            raise Untranslatable(f"the filter '{str(text)[:80]}' uses Jinja other than Dimension/TimeDimension/Entity")
        return formula_of(sql, "filter")

    # -- metrics -> KPIs
    def _metric(self, name: str, chain: tuple[str, ...]) -> str:
        """The KPI of a metric (translated on first use), or Untranslatable."""
        if name in self.kpis:
            return name
        if name in self.failed:
            raise Untranslatable(f"it uses metric '{name}', which is not translated")
        if name not in self.metrics:
            raise Untranslatable(f"metric '{name}' is not defined")
        if name in chain:
            raise Untranslatable(f"metrics reference each other in a cycle: {' -> '.join(chain + (name,))}")
        body, file, line = self.metrics[name]
        try:
            kpi = self._kpi(body, chain + (name,))
        except NOT_TRANSLATED as why:
            self.failed[name] = why_not(why)
            self.report.skip(file, line, f"metric '{name}' ({body.get('type')})", why_not(why))
            if chain:
                raise Untranslatable(f"it uses metric '{name}', which is not translated") from None
            return name
        self.kpis[name] = kpi
        return name

    def _kpi(self, body: dict, chain: tuple[str, ...]) -> dict:
        kind = str(body.get("type", "")).lower()
        params = body.get("type_params") or {}
        filters = _filters(body.get("filter"))
        kpi: dict[str, Any] = {}
        if body.get("label"):
            kpi["label"] = str(body["label"])
        if body.get("description"):
            kpi["description"] = str(body["description"]).strip()
        if kind == "simple":
            measure = params.get("measure")
            measure = measure if isinstance(measure, dict) else {"name": measure}
            if measure.get("fill_nulls_with") is not None:
                kpi["fill_nulls_with"] = measure["fill_nulls_with"]
            if measure.get("join_to_timespine"):
                _, file, line = self.metrics[body["name"]]
                self.report.note(file, line, f"metric '{body['name']}'", "join_to_timespine: periods without rows "
                                 "are shown with --fill (evaluate --fill), not by the KPI itself")
            kpi["formula"] = self.aggregate(measure.get("name"), filters + _filters(measure.get("filter")))
        elif kind == "ratio":
            numerator = self._input(params.get("numerator"), filters, chain)
            denominator = self._input(params.get("denominator"), filters, chain)
            kpi["formula"] = f"{numerator} / {denominator}"
            kpi["unit"] = "ratio"
        elif kind == "derived":
            expr = str(params.get("expr", ""))
            pieces = {}
            for item in params.get("metrics") or []:
                item = item if isinstance(item, dict) else {"name": item}
                pieces[item.get("alias") or item["name"]] = self._input(item, filters, chain)
            formula = _substitute(expr, pieces)
            kpi["formula"] = formula_of(formula, "expression of the derived metric")
        elif kind == "cumulative":
            kpi["formula"] = self._cumulative(body, params, filters)
        elif kind == "conversion":
            kpi["formula"] = self._conversion(str(body.get("name")), params, filters)
        else:
            raise Untranslatable(f"metric type '{kind}' is not known")
        return kpi

    def _conversion(self, name: str, params: dict, filters: list[str]) -> str:
        """A conversion metric as a conversion source (docs/time.md): each conversion event attributed
        to the closest base event of the same entity before it within the window (MetricFlow's
        reading), counted in that base event's period; the rate divides by the base measure."""
        spec = params.get("conversion_type_params") or {}
        if filters or any(isinstance(spec.get(k), dict) and spec[k].get("filter")
                          for k in ("base_measure", "conversion_measure")):
            raise Untranslatable("a filter on a conversion metric or its measures is not translated (it would "
                                 "have to apply to the events before they are matched)")
        base_name, target_name = (m.get("name") if isinstance(m, dict) else m
                                  for m in (spec.get("base_measure"), spec.get("conversion_measure")))
        models = []
        for measure in (base_name, target_name):
            if measure not in self.measure_model:
                raise Untranslatable(f"measure '{measure}' is not defined in any semantic model")
            models.append(self.models[self.measure_model[measure]])
        base, target = models
        entity = spec.get("entity")
        columns = {model.entities.get(entity) for model in models}
        if None in columns or len(columns) != 1:
            raise Untranslatable(f"entity '{entity}' is not one column of the same name in semantic models "
                                 f"'{base.name}' and '{target.name}' (a conversion source matches one column)")
        measure = target.measures[target_name]
        if measure.get("agg") != "count":
            raise Untranslatable(f"conversion measure '{target_name}' is a {measure.get('agg')}; the conversion "
                                 "source's rows carry the base event's columns, so only a count of conversions is "
                                 "translated")
        same = []
        for prop in spec.get("constant_properties") or []:
            pair = {base.dims.get(prop.get("base_property")), target.dims.get(prop.get("conversion_property"))}
            if None in pair or len(pair) != 1:
                raise Untranslatable(f"constant property {prop} is not one dimension column of the same name in "
                                     "both semantic models")
            same.append(pair.pop())
        source: dict[str, Any] = {"from": base.name, "to": target.name, "per": columns.pop(),
                                  "attribution": "last_touch"}
        if spec.get("window"):
            source["within"] = _length(spec["window"])
        if same:
            source["same"] = same
        source_name = f"{name}_conversions"
        if source_name in self.sources:
            raise Untranslatable(f"source '{source_name}' already exists")
        self.sources[source_name] = {"description": f"Conversions of metric '{name}' (imported from MetricFlow).",
                                     "conversion": source}
        conversions = f"count({source_name})"
        calculation = str(spec.get("calculation", "conversion_rate")).lower()
        if calculation == "conversions":
            return conversions
        if calculation != "conversion_rate":
            del self.sources[source_name]
            raise Untranslatable(f"calculation '{calculation}' is not conversion_rate or conversions")
        return f"{conversions} / {self.aggregate(base_name, [])}"

    def _input(self, item: Any, filters: list[str], chain: tuple[str, ...]) -> str:
        """A metric input of a ratio or derived metric: the KPI, or its aggregate with the input's
        filter, shifted by an offset."""
        item = item if isinstance(item, dict) else {"name": item}
        name = item.get("name")
        extra = filters + _filters(item.get("filter"))
        if extra:
            if name not in self.metrics or str(self.metrics[name][0].get("type")).lower() != "simple":
                raise Untranslatable(f"a filter on input metric '{name}', which is not a simple metric, is not "
                                     "translated")
            self._metric(name, chain)  # it must translate on its own too
            inner = self._kpi(self.metrics[name][0] | {"filter": _filters(self.metrics[name][0].get("filter"))
                                                       + extra}, chain)["formula"]
        else:
            inner = self._metric(name, chain)
            if name in self.failed:
                raise Untranslatable(f"it uses metric '{name}', which is not translated")
        if item.get("offset_window") and item.get("offset_to_grain"):
            raise Untranslatable(f"input '{name}' has both offset_window and offset_to_grain")
        if item.get("offset_window"):
            return f"previous({inner}, '{_length(item['offset_window'])}')"
        if item.get("offset_to_grain"):
            grain = str(item["offset_to_grain"]).lower()
            if grain not in _GRAINS[1:]:
                raise Untranslatable(f"offset_to_grain '{grain}' is not week, month, quarter or year")
            return f"at_start({inner}, '{grain}')"
        return f"({inner})" if not IDENTIFIER.match(inner) else inner

    def _cumulative(self, body: dict, params: dict, filters: list[str]) -> str:
        cumulative = params.get("cumulative_type_params") or {}
        window = cumulative.get("window", params.get("window"))
        to_date = cumulative.get("grain_to_date", params.get("grain_to_date"))
        period_agg = str(cumulative.get("period_agg", "first")).lower()
        measure = params.get("measure")
        if measure is None and params.get("metric"):
            metric = params["metric"]
            name = metric if isinstance(metric, str) else metric.get("name")
            target = self.metrics.get(name, ({},))[0]
            if str(target.get("type")).lower() != "simple":
                raise Untranslatable("a cumulative metric over a metric that is not simple is not translated")
            measure = (target.get("type_params") or {}).get("measure")
            filters = filters + _filters(target.get("filter"))
        measure = measure if isinstance(measure, dict) else {"name": measure}
        base = self.aggregate(measure.get("name"), filters + _filters(measure.get("filter")))
        _, file, line = self.metrics[body["name"]]
        if window and to_date:
            raise Untranslatable("both window and grain_to_date are set")
        if period_agg not in ("first", "last"):
            raise Untranslatable(f"period_agg '{period_agg}' has no equivalent")
        if window:
            if period_agg != "last":
                self.report.note(file, line, f"metric '{body['name']}'", f"rolling over '{_length(window)}': equal to "
                                 "MetricFlow at the day grain; at coarser grains kpi-engine reads the window ending "
                                 "on the period's last day (MetricFlow's period_agg: last), MetricFlow's default "
                                 "(first) the window ending on the period's first day")
            return f"rolling({base}, '{_length(window)}')"
        if period_agg != "last":
            self.report.note(file, line, f"metric '{body['name']}'", "at grains coarser than the day, kpi-engine "
                             "shows the period's last value (MetricFlow's period_agg: last); MetricFlow's default "
                             "(first) shows the first day's")
        if to_date:
            grain = str(to_date).lower()
            if grain not in _GRAINS[1:]:
                raise Untranslatable(f"grain_to_date '{grain}' is not week, month, quarter or year")
            return f"cumulative({base}, '{grain}')"
        return f"cumulative({base})"


def _filters(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def _length(window: Any) -> str:
    match = re.fullmatch(r"\s*(\d+)\s+(day|week|month|quarter|year)s?\s*", str(window), re.I)
    if not match:
        raise Untranslatable(f"the window '{window}' is not 'N days/weeks/months/quarters/years'")
    count, unit = int(match.group(1)), match.group(2).lower()
    return f"{count} {unit}{'s' if count != 1 else ''}"


def _substitute(expr: str, pieces: dict[str, str]) -> str:
    """Metric names in a derived metric's SQL expression replaced by their formulas (outside quotes)."""
    parts = re.split(r"('(?:[^']|'')*')", expr)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b[A-Za-z_][A-Za-z0-9_]*\b",
                          lambda m: pieces.get(m.group(0), m.group(0)) if m.group(0) in pieces else _keep(m.group(0)),
                          parts[i])
    return "".join(parts)


_SQL_WORDS = {"and", "or", "not", "null", "is", "in", "between", "true", "false", "coalesce", "nullif", "abs",
              "round", "least", "greatest", "if"}


def _keep(word: str) -> str:
    if word.lower() in _SQL_WORDS:
        return word
    raise Untranslatable(f"its expression names '{word}', which is not one of its input metrics")


def import_metricflow(path: Path, out: Path, tables: bool = False) -> Report:
    need_folder(path, "folder (or file) of MetricFlow YAML")
    importer = MetricFlowImport(path, tables)
    if not importer.models and not importer.metrics and not importer.report.skipped:
        raise UsageError(f"no semantic_models or metrics found in '{path}'.", None,
                         "Point it at the dbt project's models folder, or a YAML file with 'semantic_models:'.")
    sources, kpis = importer.translate()
    write_project(out, "metricflow", sources, kpis, importer.report,
                  f"Imported from dbt MetricFlow ({path}) by kpi-engine import metricflow.",
                  _project_file(path, out))
    return importer.report


def _project_file(path: Path, out: Path) -> str | None:
    """kpi_engine.yaml for a new folder: the dbt project's profile as warehouse, when one is found."""
    folder = path.resolve() if path.is_dir() else path.resolve().parent
    for candidate in (folder, *folder.parents):
        project = candidate / "dbt_project.yml"
        if project.is_file():
            data, _ = read_yaml(project)
            profile = (data or {}).get("profile") if isinstance(data, dict) else None
            relative = os.path.relpath(candidate, out.resolve())
            name = re.sub(r"[^A-Za-z0-9_]", "_", out.resolve().name)
            lines = [f"name: {name}", f"dbt: {{project_dir: '{relative}'}}"]
            if profile:
                lines.append(f"warehouse: {{dbt_profile: {profile}}}")
            return "\n".join(lines) + "\n"
    return None
