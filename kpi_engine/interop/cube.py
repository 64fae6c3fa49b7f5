"""A Cube data model (YAML) -> kpi-engine sources and KPIs (docs/dbt.md#cube).

A cube becomes a source (``sql_table`` as ``table``, ``sql`` as ``sql``; its first time dimension
as ``time``, the others as ``time_axes``; its primary key; many_to_one joins as relationships);
each measure becomes a KPI named ``<cube>_<measure>``; each segment a source that extends the
cube with the segment's condition (``<cube>_<segment>``), so ``count(orders_completed)`` is the
count with that segment applied.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..dbt import read_yaml
from ..errors import UsageError
from . import IDENTIFIER, NOT_TRANSLATED, Report, Untranslatable, mappings, why_not, formula_of, need_folder, write_project, yaml_files

AGGREGATES = {"count": "count", "count_distinct": "count_distinct", "countDistinct": "count_distinct",
              "sum": "sum", "avg": "avg", "min": "min", "max": "max"}
MANY_TO_ONE = ("many_to_one", "belongs_to", "belongsTo")
_MEMBER = re.compile(r"\$?\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}(?:\.([A-Za-z_][A-Za-z0-9_]*))?")
_RAW_AGGREGATE = re.compile(r"\b(sum|count|avg|min|max|median|percentile_cont)\s*\(", re.I)


class CubeImport:
    def __init__(self, path: Path):
        self.root = path if path.is_dir() else path.parent
        self.report = Report()
        self.cubes: dict[str, tuple[dict, str, dict, tuple]] = {}  # name -> (body, file, lines, path)
        self.sources: dict[str, dict] = {}
        self.kpis: dict[str, dict] = {}
        self.columns: dict[str, dict[str, str]] = {}  # cube -> dimension -> formula text
        for file in yaml_files(path):
            self._read(file)

    def _read(self, file: Path) -> None:
        try:
            shown = str(file.relative_to(self.root))
        except ValueError:
            shown = str(file)
        data, lines = read_yaml(file, shown)
        if not isinstance(data, dict):
            return
        for i, body in mappings(data.get("cubes")):
            if isinstance(body, dict) and isinstance(body.get("name"), str):
                self.cubes[body["name"]] = (body, shown, lines, ("cubes", i))
        for i, body in mappings(data.get("views")):
            self.report.skip(shown, lines.get(("views", i)), f"view '{body.get('name')}'",
                             "views are not imported: a kpi-engine KPI already reads any source")

    def line(self, cube: str, *path: Any) -> int | None:
        _, _, lines, base = self.cubes[cube]
        for end in range(len(path), -1, -1):
            if base + tuple(path[:end]) in lines:
                return lines[base + tuple(path[:end])]
        return None

    def skip(self, cube: str, path: tuple, construct: str, why: Any) -> None:
        self.report.skip(self.cubes[cube][1], self.line(cube, *path), construct, why_not(why))

    def translate(self) -> tuple[dict, dict]:
        for name in self.cubes:
            try:
                self.sources[name] = self._source(name)
            except NOT_TRANSLATED as why:
                self.skip(name, (), f"cube '{name}'", why)
        cubes = list(self.sources)  # segments add sources of their own
        for name in cubes:
            self._joins(name)
            self._segments(name)
        for name in cubes:
            body = self.cubes[name][0]
            for i, measure in mappings(body.get("measures")):
                kpi_name = f"{name}_{measure.get('name')}"
                try:
                    self.kpis[kpi_name] = self._measure(name, measure)
                except NOT_TRANSLATED as why:
                    self.skip(name, ("measures", i), f"measure '{name}.{measure.get('name')}' ({measure.get('type')})",
                              why)
            if body.get("pre_aggregations"):
                self.report.note(self.cubes[name][1], self.line(name, "pre_aggregations"), f"cube '{name}'",
                                 "pre_aggregations are not imported (kpi-engine reads the tables; the numbers are "
                                 "the same)")
        return self.sources, self.kpis

    def sql(self, cube: str, text: Any, what: str) -> str:
        """Cube SQL over one cube's columns as a formula: {CUBE}.col and {CUBE.dimension} read the column."""
        def member(match: re.Match) -> str:
            owner, field_, column = match.groups()
            if owner not in ("CUBE", cube):
                if field_ is None and column is None and owner in self.columns.get(cube, {}):
                    text = self.columns[cube][owner]
                    return text if IDENTIFIER.match(text) else f"({text})"
                raise Untranslatable(f"the {what} reads '{match.group(0)}', outside cube '{cube}'")
            if column is not None:
                return column
            if field_ is None:
                raise Untranslatable(f"the {what} reads '{match.group(0)}' without a column")
            if field_ in self.columns.get(cube, {}):
                text = self.columns[cube][field_]
                return text if IDENTIFIER.match(text) else f"({text})"
            raise Untranslatable(f"the {what} reads '{field_}', which is not a dimension of '{cube}'")

        rewritten = _MEMBER.sub(member, str(text))
        if "{" in rewritten:
            raise Untranslatable(f"the {what} '{str(text)[:80]}' uses template references that are not translated")
        return formula_of(rewritten, what)

    def _source(self, name: str) -> dict:
        body = self.cubes[name][0]
        source: dict[str, Any] = {}
        if body.get("title"):
            source["label"] = str(body["title"])
        if body.get("description"):
            source["description"] = str(body["description"]).strip()
        if body.get("sql_table"):
            source["table"] = str(body["sql_table"]).strip()
        elif body.get("sql"):
            if "{" in str(body["sql"]):
                raise Untranslatable("its sql uses template references ({FILTER_PARAMS}, {other.sql()}, ...)")
            source["sql"] = " ".join(str(body["sql"]).split())
        else:
            raise Untranslatable("it has neither sql_table nor sql")
        self.columns[name] = {}
        times = []
        for i, dim in mappings(body.get("dimensions")):
            dim_name = dim.get("name")
            try:
                if dim.get("sub_query") or dim.get("case"):
                    raise Untranslatable("sub_query and case dimensions are not translated")
                text = self.sql(name, dim.get("sql", dim_name), f"sql of dimension '{dim_name}'")
            except NOT_TRANSLATED as why:
                self.skip(name, ("dimensions", i), f"dimension '{name}.{dim_name}'", why)
                continue
            self.columns[name][dim_name] = text
            if IDENTIFIER.match(text) and text != dim_name:
                entry: Any = {"name": dim_name, "column": text}
            elif IDENTIFIER.match(text):
                entry = dim_name
            else:
                source.setdefault("map", {})[dim_name] = text
                entry = dim_name
            if dim.get("primary_key"):
                source["primary_key"] = text if IDENTIFIER.match(text) else dim_name
                continue
            if dim.get("type") == "time":
                times.append(text if IDENTIFIER.match(text) else dim_name)
                continue
            source.setdefault("dimensions", []).append(entry)
        if times:
            source["time"] = times[0]
            if times[1:]:
                source["time_axes"] = times[1:]
        return source

    def _joins(self, name: str) -> None:
        for i, join in mappings(self.cubes[name][0].get("joins")):
            target = join.get("name")
            try:
                if join.get("relationship") not in MANY_TO_ONE:
                    raise Untranslatable(f"relationship '{join.get('relationship')}' is not translated: kpi-engine "
                                         "joins many_to_one only (one row of the other cube per row), so a KPI is "
                                         "never inflated by a join; slice the other cube by this one's key instead")
                if target not in self.sources:
                    raise Untranslatable(f"cube '{target}' is not translated")
                self.sources[name].setdefault("relationships", []).append(self._join_keys(name, target, join))
            except NOT_TRANSLATED as why:
                self.skip(name, ("joins", i), f"join '{name}' -> '{target}'", why)

    def _join_keys(self, name: str, target: str, join: dict) -> dict:
        sides = [part.strip() for part in str(join.get("sql", "")).split("=")]
        if len(sides) != 2:
            raise Untranslatable(f"the join condition '{join.get('sql')}' is not one equality of two columns")
        columns = {}
        for side in sides:
            match = _MEMBER.fullmatch(side)
            owner, field_, column = match.groups() if match else (None, None, None)
            if owner == "CUBE":
                owner = name
            column = column or (self.columns[owner].get(field_) if owner in self.columns and field_ else None)
            if owner not in (name, target) or not column or not IDENTIFIER.match(column) or owner in columns:
                raise Untranslatable(f"the join condition '{join.get('sql')}' is not '{{CUBE}}.column = "
                                     f"{{{target}}}.column'")
            columns[owner] = column
        relation = {"to": target, "on": columns[name]}
        if columns[target] != columns[name]:
            relation["to_column"] = columns[target]
        return relation

    def _segments(self, name: str) -> None:
        for i, segment in mappings(self.cubes[name][0].get("segments")):
            try:
                condition = self.sql(name, segment.get("sql"), f"sql of segment '{segment.get('name')}'")
            except NOT_TRANSLATED as why:
                self.skip(name, ("segments", i), f"segment '{name}.{segment.get('name')}'", why)
                continue
            self.sources[f"{name}_{segment.get('name')}"] = {"extends": name, "where": condition}

    def _measure(self, cube: str, measure: dict) -> dict:
        kind = measure.get("type")
        kpi: dict[str, Any] = {}
        if measure.get("title"):
            kpi["label"] = str(measure["title"])
        if measure.get("description"):
            kpi["description"] = str(measure["description"]).strip()
        if measure.get("format") in ("percent", "currency"):
            kpi["unit"] = measure["format"]
        if kind == "number":
            kpi["formula"] = self._number(cube, measure)
            return kpi
        if kind == "count_distinct_approx" or kind == "countDistinctApprox":
            raise Untranslatable("an approximate distinct count has no equivalent (count_distinct is exact)")
        if kind == "running_total" or kind == "runningTotal":
            measure = dict(measure, type="sum", rolling_window={"trailing": "unbounded"})
            kind = "sum"
        if kind not in AGGREGATES:
            raise Untranslatable(f"measure type '{kind}' has no equivalent")
        conditions = [self.sql(cube, item.get("sql"), "filter") for _, item in mappings(measure.get("filters"))]
        where = f" where {' and '.join(f'({c})' for c in conditions)}" if conditions else ""
        if kind == "count" and measure.get("sql") is None:
            target = cube
        else:
            text = self.sql(cube, measure.get("sql"), "sql of the measure")
            if not IDENTIFIER.match(text):
                raise Untranslatable(f"the measure reads the expression '{text[:60]}'; add it to the cube as a "
                                     "dimension and aggregate that, or write the KPI by hand")
            target = f"{cube}.{text}"
        formula = f"{AGGREGATES[kind]}({target}{where})"
        window = measure.get("rolling_window")
        if window:
            formula = self._rolling(formula, window)
        kpi["formula"] = formula
        return kpi

    def _number(self, cube: str, measure: dict) -> str:
        text = str(measure.get("sql", ""))
        if _RAW_AGGREGATE.search(text):
            raise Untranslatable("a number measure over raw SQL aggregates is not translated; "
                                 "reference other measures ({count}, {orders.total}) instead")
        measures = {m.get("name") for _, m in mappings(self.cubes[cube][0].get("measures"))}

        def member(match: re.Match) -> str:
            owner, field_, column = match.groups()
            if column is None and field_ is None and owner in measures:
                return f"{cube}_{owner}"
            if column is None and field_ is not None and owner in ("CUBE", cube) and field_ in measures:
                return f"{cube}_{field_}"
            if column is None and field_ is not None and owner in self.cubes:
                raise Untranslatable(f"'{match.group(0)}' is a measure of another cube: Cube computes it through "
                                     "the join between the cubes (and the query's time dimension), which has no "
                                     "exact equivalent; write the KPI by hand")
            raise Untranslatable(f"'{match.group(0)}' is not a measure")

        return formula_of(_MEMBER.sub(member, text), "sql of the number measure")

    def _rolling(self, formula: str, window: dict) -> str:
        if window.get("leading") or str(window.get("offset", "end")) != "end" or window.get("type"):
            raise Untranslatable("only trailing rolling windows (offset end) are translated")
        trailing = str(window.get("trailing", "")).strip()
        if trailing == "unbounded":
            return f"cumulative({formula})"
        match = re.fullmatch(r"(\d+)\s+(day|week|month|quarter|year)s?", trailing)
        if not match:
            raise Untranslatable(f"the trailing window '{trailing}' is not 'unbounded' or 'N days/weeks/months'")
        count = int(match.group(1))
        return f"rolling({formula}, '{count} {match.group(2)}{'s' if count != 1 else ''}')"


def import_cube(path: Path, out: Path) -> Report:
    need_folder(path, "folder (or file) of the Cube data model")
    importer = CubeImport(path)
    if not importer.cubes:
        raise UsageError(f"no cubes found in '{path}'.", None, "Point it at the model folder of a Cube project "
                         "(YAML files with 'cubes:').")
    sources, kpis = importer.translate()
    write_project(out, "cube", sources, kpis, importer.report,
                  f"Imported from the Cube data model ({path}) by kpi-engine import cube.", None)
    return importer.report
