"""How a source's columns are read from the warehouse: ``map:``, ``where:`` and ``unmapped:``.

A library's KPIs read the columns of its standard sources by name (spend, is_qualified,
customer_at, ...): each source's contract. A project binds them to its own warehouse without
touching a formula:

    sources:
      ad_spend:
        table: marketing.daily_costs
        map:
          spend: cost_usd                 # a column of the table
          channel: lower_source           # dimensions, the time column and keys too
      web_sessions:
        map: {is_bounce: pages = 1}       # a formula over the table's own columns
      social_posts:
        map: {saves: 0}                   # a constant: the export has no saves
      email_sends: {unmapped: true}       # no such data: its KPIs are unavailable

``where:`` keeps a subset of the rows (the library's leads are the contacts ``where:
is_qualified``) and ``extends:`` reads another source's rows (spec.py). This module resolves
the map formulas against the warehouse's columns, the conditions against the source's
columns as formulas see them, and explains what is missing. The compiler turns both into SQL
(``_Compiler.column`` and ``_Compiler.relation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from . import nodes as n
from .errors import FormulaError, KpiEngineError, Location, QueryError, ResolveError, did_you_mean
from .resolve import BOOLEAN, NULL, UNKNOWN, Catalog, resolve_row
from .spec import Project, RowFormula

MAX_NAMED = 6  # KPIs named in one message


@dataclass(frozen=True)
class SourceMap:
    """A source's ``map:`` and ``where:``, resolved."""

    columns: Mapping[str, n.Node]  # column -> row formula over the warehouse's columns
    types: Mapping[str, str]  # column -> the type of its formula
    condition: n.Node | None  # every where: condition of the source, and-ed


def resolve_sources(project: Project, warehouse: Catalog, functions: Mapping[str, Any],
                    errors: list[KpiEngineError], missing: dict[tuple[str, str], list[str]]
                    ) -> tuple[dict[str, SourceMap], dict[str, dict[str, str]]]:
    """Each source's map and conditions, and the columns of every described source as formulas
    see them: the warehouse's, with the mapped ones added (or replaced).

    Sources that extend another share its map formulas: each formula is resolved, and its
    problems reported, once. Columns a library source's where reads and the warehouse lacks go
    to ``missing``, reported with those of the library's KPIs."""
    maps: dict[str, SourceMap] = {}
    catalog: dict[str, dict[str, str]] = {}
    done: dict[tuple[RowFormula, str], tuple[n.Node, str]] = {}

    def row(name: str, formula: RowFormula, columns: Mapping[str, str] | None,
            collect: dict | None = None) -> tuple[n.Node, str]:
        key = (formula, project.sources[name].rows_of or name)
        if key not in done:
            done[key] = resolve_row(project, name, formula.text, formula.source, columns, functions, errors,
                                    collect, f"the where of source '{name}'")
        return done[key]

    for name, source in project.sources.items():
        if source.unmapped:
            continue
        described = warehouse.get(name)
        mapped, types = {}, {}
        for column, formula in source.column_map.items():
            mapped[column], types[column] = row(name, formula, described)
        columns = None if described is None else {**described, **types}
        if columns is not None:
            catalog[name] = columns
        conditions = []
        for formula in source.filters:
            condition, kind = row(name, formula, columns, missing if source.library else None)
            if kind not in (BOOLEAN, UNKNOWN, NULL) and (formula, "checked") not in done:
                done[(formula, "checked")] = (condition, kind)
                errors.append(FormulaError(f"a source's where must be a condition (true/false), but this is a {kind}.",
                                           formula.source.locate(n.Pos()),
                                           "Write a condition such as 'is_qualified' or \"status = 'paid'\"."))
            conditions.append(condition)
        condition = None
        for part in conditions:
            condition = part if condition is None else n.Logical("and", condition, part)
        if mapped or condition is not None:
            maps[name] = SourceMap(mapped, types, condition)
    return maps, catalog


def missing_column_errors(project: Project, warehouse: Catalog, missing: Mapping[tuple[str, str], list[str]],
                          reported: set[tuple[str, str]] = frozenset()) -> list[ResolveError]:
    """One error per column that library KPIs read and the warehouse lacks, at the source a
    ``map:`` entry for it belongs to (sources that extend another share its table); none for a
    column already ``reported`` (a time or key column the source declares)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for (source, column), kpis in missing.items():
        owner = project.sources[source].rows_of or source
        if (owner, column) in reported:
            continue
        readers = grouped.setdefault((owner, column), [])
        readers.extend(kpi for kpi in kpis if kpi not in readers)
    errors = []
    for (owner, column), kpis in grouped.items():
        spec = project.sources[owner]
        table = f"table '{spec.table}'" if spec.table else "its query"
        named = ", ".join(kpis[:MAX_NAMED]) + (f" and {len(kpis) - MAX_NAMED} more" if len(kpis) > MAX_NAMED else "")
        close = did_you_mean(column, warehouse.get(owner, {}))
        errors.append(ResolveError(
            f"source '{owner}' reads {table}, which has no column '{column}', read by the library ({named}).",
            spec.where(key=True),
            (f"{close} " if close else "") +
            f"Map it in your project: 'sources: {{{owner}: {{map: {{{column}: <a column of the table, or a formula "
            "over its columns>}}}'. If your data has no such value, map it to its neutral value (a constant such as "
            "0, false or null; docs/library.md lists each column's) or declare the source 'unmapped: true'."))
    return errors


def _declared_at(project: Project, source: str) -> str:
    where = project.sources[source].where("unmapped")
    return f"{where.file}:{where.line}" if where.file and where.line else f"source '{source}'"


def unavailable_error(project: Project, kpi: str, sources: tuple[str, ...]) -> QueryError:
    """Asking for a KPI that reads a source the project declares unmapped."""
    named = ", ".join(f"'{source}' (unmapped at {_declared_at(project, source)})" for source in sources)
    return QueryError(f"KPI '{kpi}' is unavailable: it reads source{'s' if len(sources) > 1 else ''} {named}.",
                      Location(obj=f"kpi '{kpi}'"),
                      "Map the source to a table or query ('table:' or 'sql:' instead of 'unmapped: true') to "
                      "compute it; 'kpi-engine list' shows which KPIs are available.")


def unmapped_error(project: Project, sources: list[str], label: str) -> QueryError:
    """An ad-hoc formula or filter that reads a source the project declares unmapped."""
    named = ", ".join(f"'{source}' (unmapped at {_declared_at(project, source)})" for source in sources)
    return QueryError(f"the {label} reads source{'s' if len(sources) > 1 else ''} {named}: the warehouse has no "
                      "such data.", Location(obj=label),
                      "Map the source to a table or query ('table:' or 'sql:') to use it.")


def unavailable_kpis(model) -> dict[str, tuple[str, ...]]:
    """KPI -> the unmapped sources it needs, for the KPIs that cannot be computed."""
    return {name: kpi.unavailable for name, kpi in model.kpis.items() if kpi.unavailable}

