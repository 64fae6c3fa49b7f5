"""Spec files -> frozen dataclasses. The only module that knows YAML.

Every file of a project is loaded with the position of each value, validated with
the JSON Schema shipped in ``kpi_engine/schema``, and turned into ``SourceSpec`` and
``KpiSpec`` objects that remember where each of their fields was written. All
problems of all files are collected and raised together as ``ProjectInvalid``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import yaml

from .calendar import Calendar
from .custom_calendars import ProjectCalendar, read_granularities
from .dbt import resolve_models
from .errors import FormulaError, KpiEngineError, Location, ProjectInvalid, SpecError, did_you_mean, in_file_order
from .parser import FormulaSource, parse

CONFIG_FILE = "kpi_engine.yaml"
SPEC_SUFFIXES = (".yaml", ".yml")

Path_ = tuple  # a JSON path inside one file: ("kpis", "cost_per_lead", "formula")


# --- loaded objects -------------------------------------------------------------


@dataclass(frozen=True)
class Positions:
    """File positions of the values (and mapping keys) inside one spec object."""

    file: str
    values: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path_, obj: str | None = None, key: bool = False) -> Location:
        """The location of ``path``, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path and path not in table:
            path = path[:-1]
        line, column = table.get(path) or self.values.get(path, (None, None))
        return Location(self.file, line, column, obj)


@dataclass(frozen=True)
class Dimension:
    name: str
    column: str
    label: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Relationship:
    to: str
    on: str  # the (first) column of this source that points at ``to``
    to_column: str | None = None
    type: str = "many_to_one"
    name: str | None = None  # names the path through it (``--by name__dim``); default: ``to``
    pairs: tuple[tuple[str, str], ...] = ()  # a composite key: (column here, column there) for each part
    as_of: str | None = None  # on a history source: "row_time" (default) or "latest"

    @property
    def path_name(self) -> str:
        return self.name or self.to

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """Every (column here, column there) the join matches on."""
        return self.pairs or ((self.on, self.to_column or self.on),)


CONVERSION_UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")
_WINDOW = re.compile(r"\s*([1-9][0-9]{0,3})\s+(minute|hour|day|week|month|quarter|year)s?\s*", re.IGNORECASE)
ATTRIBUTIONS = ("last_touch", "first_touch")
# Columns a conversion source adds to the rows of the base source it attributes conversions to.
CONVERSION_COLUMNS = ("converted_at", "seconds_to_convert", "days_to_convert")


def parse_window(text: str) -> tuple[int, str] | None:
    """'7 days', '30 minutes', '1 month' -> (amount, unit); None when it is not a length of time."""
    match = _WINDOW.fullmatch(text) if isinstance(text, str) else None
    return (int(match.group(1)), match.group(2).lower()) if match else None


@dataclass(frozen=True)
class ConversionSpec:
    """A source whose rows are conversions: each row of ``to`` with a row of ``from_`` of the
    same entity (``per``) at most ``within`` before it (at any time before without it), attributed to one such row (the latest
    with last_touch, the earliest with first_touch) and carrying that base row's columns."""

    from_: str
    to: str
    per: str
    within: tuple[int, str] | None  # None: any time after the base event
    attribution: str = "last_touch"
    same: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowFormula:
    """A formula over one row of a source (a ``map:`` value or a ``where:`` condition) and
    where it is written, for errors at file:line:column."""

    text: str
    source: FormulaSource


# Fields that say what a source reads: an override that sets one of them replaces them all.
RELATION_FIELDS = ("table", "sql", "unmapped", "model")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    table: str | None
    sql: str | None
    time: str | None
    primary_key: tuple[str, ...]
    dimensions: tuple[Dimension, ...]
    columns: Mapping[str, str]
    relationships: tuple[Relationship, ...]
    label: str | None
    description: str | None
    positions: Positions = field(compare=False, repr=False)
    path: Path_ = field(compare=False, repr=False, default=())
    library: str | None = None  # the include it comes from
    overrides: Location | None = None  # the library definition this one overrides
    freshness_days: int | None = None  # the latest row may be at most this many days old
    column_map: Mapping[str, RowFormula] = field(default_factory=dict)  # map: column -> formula
    filters: tuple[RowFormula, ...] = ()  # where: conditions (its own, and those of the source it extends)
    extends: str | None = None
    unmapped: bool = False  # declared as having no data in the warehouse
    rows_of: str | None = None  # the source whose table (or sql) and map it reads, when it extends one
    declared: frozenset[str] = frozenset()  # the fields written for it (the rest may be inherited)
    time_end: str | None = None  # an interval source: a row counts from ``time`` until this column
    time_axes: tuple[str, ...] = ()  # other time columns its rows can be placed in time by
    axis_of: tuple[str, str] | None = None  # (source, axis) of a view generated for a time axis
    valid_from: str | None = None  # a history source: each row holds from this column ...
    valid_to: str | None = None  # ... up to (not including) this one; empty = still current
    conversion: ConversionSpec | None = None  # a conversion source (conversions.py builds its rows)
    model: str | None = None  # a dbt model: its relation (dbt.py) becomes ``table``

    def where(self, *subpath: Any, key: bool = False) -> Location:
        return self.positions.at(self.path + subpath, f"source '{self.name}'", key)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)


@dataclass(frozen=True)
class KpiSpec:
    name: str
    formula: str
    formula_source: FormulaSource
    label: str | None
    description: str | None
    unit: str
    format: str | None
    owner: str | None
    tags: tuple[str, ...]
    dimensions: tuple[str, ...] | None
    target: Mapping[str, Any] | None
    positions: Positions = field(compare=False, repr=False)
    path: Path_ = field(compare=False, repr=False, default=())
    library: str | None = None  # the include it comes from
    fill_nulls_with: float | int | None = None  # shown instead of null inside the KPI's own rows
    matures_after_days: int | None = None  # a cohort reading: a period is complete this long after it ends
    time: str | None = None  # the time axis its own aggregates place rows by (a source's time_axes)
    overrides: Location | None = None  # the library definition this one overrides

    def where(self, *subpath: Any, key: bool = False) -> Location:
        return self.positions.at(self.path + subpath, f"kpi '{self.name}'", key)


@dataclass(frozen=True)
class _NamedBody:
    """An entry of a spec file kept as written (checked by the schema), located by its name."""

    SECTION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""
    name: str
    body: Mapping[str, Any]
    positions: Positions = field(compare=False, repr=False)
    library: str | None = None

    def where(self, *subpath: Any, key: bool = False) -> Location:
        return self.positions.at((self.SECTION, self.name) + subpath, f"{self.KIND} '{self.name}'", key)


@dataclass(frozen=True)
class QuerySpec(_NamedBody):
    """A saved query: a named request (KPIs, dimensions, grain, range, filters) in a spec file."""

    SECTION: ClassVar[str] = "queries"
    KIND: ClassVar[str] = "query"


@dataclass(frozen=True)
class TestSpec(_NamedBody):
    """A KPI unit test: input rows per table and the KPI values expected from them."""

    SECTION: ClassVar[str] = "tests"
    KIND: ClassVar[str] = "test"


@dataclass(frozen=True)
class RollupSpec(_NamedBody):
    """A rollup: day totals of one source by chosen dimensions, materialized ahead of requests
    (rollups.py checks and resolves it)."""

    SECTION: ClassVar[str] = "rollups"
    KIND: ClassVar[str] = "rollup"


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    root: Path
    warehouse: str | Mapping[str, Any] | None
    dialect: str | None
    currency: str
    positions: Positions = field(compare=False, repr=False)
    calendar: Calendar = field(default_factory=Calendar)
    include: tuple[str, ...] = ()
    dbt: Mapping[str, Any] | None = None  # the dbt project, manifest and profiles folder (dbt.py)


@dataclass(frozen=True)
class Project:
    config: ProjectConfig
    sources: Mapping[str, SourceSpec]
    kpis: Mapping[str, KpiSpec]
    files: tuple[str, ...]
    broken: frozenset[str] = frozenset()  # names left out because their spec is invalid
    tests: Mapping[str, "TestSpec"] = field(default_factory=dict)
    queries: Mapping[str, QuerySpec] = field(default_factory=dict)
    rollups: Mapping[str, RollupSpec] = field(default_factory=dict)


# --- YAML with positions ----------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so 'on:' or 'no' stay text; and
    bounded: it stops at MAX_DEPTH levels of nesting (PyYAML composes recursively, so a file
    nested a thousand deep would exhaust Python's stack) and at MAX_VALUES values."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent, index):
        self.depth += 1
        self.composed += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Exceeded("depth", self.peek_event().start_mark)
            if self.composed > MAX_VALUES:
                raise _Exceeded("values", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


MAX_VALUES = 50_000  # values one spec file may hold, once aliases are expanded too (the library's largest: 255)
MAX_DEPTH = 20  # levels of nesting in a spec file (a KPI test's row is 7 levels down)
MAX_SPEC_BYTES = 2_000_000  # bytes of one spec file; the marketing library's largest is 5 KB
MAX_SPEC_FILES = 1_000  # spec files under a project folder, and under each library folder
MAX_TEST_ROWS = 10_000  # rows of one KPI test, each '_repeat' copy counted

# PyYAML errors whose context mark is an opening bracket or quote: what was opened, how to close it.
_OPENED = {
    "while parsing a flow sequence": ("'['", "Close it with ']' where the list ends."),
    "while parsing a flow mapping": ("'{'", "Close it with '}' where the mapping ends."),
    "while scanning a quoted scalar": ("quote", "End the text with the same quote it starts with."),
}


class _Exceeded(Exception):
    """A limit was reached while reading YAML: ``what`` is depth, values or aliases."""

    def __init__(self, what: str, mark):
        self.what = what
        self.mark = mark


_EXCEEDED = {
    "depth": (f"the file nests values more than {MAX_DEPTH} levels deep.",
              "Spec files are shallow (a KPI test's row is 7 levels down): remove the extra nesting."),
    "values": (f"the file holds more than {MAX_VALUES:,} values.", "Split it into several files."),
    "aliases": (f"the file expands to more than {MAX_VALUES:,} values (through YAML aliases?).",
                "Write the values out, or split the file; aliases that nest aliases multiply the document."),
}


# Where a value is written in its file, and how (what ``formula_source`` reads): start line, start
# column, start index, end line, end index, scalar style, a scalar's text ("" for a mapping or list).
# Kept instead of PyYAML's node: a cached document otherwise holds a node and two marks for every
# value it read (a third of the objects the garbage collector walked while a 2,000-KPI project
# compiled); a plain tuple of strings and numbers is not walked at all.
_Written = tuple[int, int, int, int, int, "str | None", str]


class _Document:
    """Plain Python data of one YAML document plus the position of every value."""

    def __init__(self, file: str, text: str, empty_hint: str = "Declare 'sources:' and/or 'kpis:' in it, or delete it."):
        self.file = file
        self.text = text
        self.empty_hint = empty_hint
        self.budget = MAX_VALUES
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.nodes: dict[Path_, _Written] = {}
        self.errors: list[SpecError] = []
        self.data: Any = None
        self.schema_errors: dict[str, list[tuple[Path_, SpecError]]] = {}  # schema name -> its problems

    def load(self) -> "_Document":
        try:
            loader = _Loader(self.text)
            try:
                root = loader.get_single_node()
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as error:
            self.errors.append(self._yaml_error(error))
            return self
        except yaml.YAMLError as error:  # pragma: no cover - PyYAML marks nearly every error
            self.errors.append(SpecError(f"not valid YAML: {error}", Location(self.file)))
            return self
        except _Exceeded as exceeded:
            self.errors.append(self._exceeded(exceeded))
            return self
        if root is None:
            self.errors.append(SpecError("the file is empty.", Location(self.file, 1, 1), self.empty_hint))
            return self
        try:
            self.data = self._build(root, (), loader)
        except _Exceeded as exceeded:
            self.errors.append(self._exceeded(exceeded))
            self.data = None
        return self

    def _exceeded(self, exceeded: _Exceeded) -> SpecError:
        message, hint = _EXCEEDED[exceeded.what]
        return SpecError(message, Location(self.file, exceeded.mark.line + 1, exceeded.mark.column + 1), hint)

    def _yaml_error(self, error: yaml.MarkedYAMLError) -> SpecError:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or "syntax error"
        hint = "Check indentation and quoting around this place."
        if "\t" in problem or "\\t" in problem or "tab" in problem.lower():
            hint = "YAML does not allow tabs for indentation; indent with spaces."
        opened = error.context_mark if error.context in _OPENED else None
        if opened and (not mark or mark.line > opened.line):
            # A bracket or quote runs on past its line: the mistake is almost always where it
            # was opened, not where PyYAML gave up (often the end of the file).
            what, close = _OPENED[error.context]
            ended = not mark or "end of stream" in problem or "<stream end>" in problem
            state = ("never closed" if ended
                     else f"still open at {self.file}:{mark.line + 1}:{mark.column + 1} ({problem})")
            return SpecError(f"not valid YAML: the {what} opened here is {state}.",
                             Location(self.file, opened.line + 1, opened.column + 1), f"{close} {hint}")
        if error.context and problem.startswith("but "):
            problem = f"{error.context}, {problem}"  # PyYAML splits this sentence in two
        if error.context and "single document" in error.context:
            hint = ("A spec file holds a single document: remove the '---' line, or move what follows it "
                    "to a file of its own.")
        where = Location(self.file, mark.line + 1, mark.column + 1) if mark else Location(self.file)
        return SpecError(f"not valid YAML: {problem}.", where, hint)

    def _build(self, node: yaml.Node, path: Path_, loader: yaml.SafeLoader) -> Any:
        start, end = node.start_mark, node.end_mark
        self.values[path] = (start.line + 1, start.column + 1)
        scalar = isinstance(node, yaml.ScalarNode)
        self.nodes[path] = (start.line, start.column, start.index, end.line, end.index,
                            node.style if scalar else None, node.value if scalar else "")
        self.budget -= 1
        if self.budget < 0:  # aliases can make a 1 KB file expand to billions of values
            raise _Exceeded("aliases", node.start_mark)
        if len(path) >= MAX_DEPTH:  # aliases of aliases can nest deeper than the file is written
            raise _Exceeded("depth", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # Keys are names: take a plain key's text as written (never 1.5 or null).
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.errors.append(SpecError(
                        "a mapping key must be a plain name, not a list or mapping.",
                        Location(self.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        "Write names as plain words, e.g. 'cost_per_lead:'."))
                    key = str(key)
                child = path + (key,)
                if key in result:
                    first = self.keys[child]
                    self.errors.append(SpecError(
                        f"duplicate key '{key}' (first defined at line {first[0]}).",
                        Location(self.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        "Remove or rename one of them; YAML would silently keep only the last."))
                    continue
                self.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self._build(value_node, child, loader)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, path + (i,), loader) for i, item in enumerate(node.value)]
        try:
            return loader.construct_object(node, deep=True)
        except Exception as error:  # noqa: BLE001 - PyYAML's constructors fail in many ways: !!int abc, !!timestamp 2
            problem = getattr(error, "problem", None) or (
                str(error).splitlines()[0] if isinstance(error, (ValueError, OverflowError)) and str(error)
                else f"it is not a valid {node.tag.rsplit(':', 1)[-1]}")
            self.errors.append(SpecError(f"cannot read the value {node.value!r}: {problem}.",
                                         Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1),
                                         "Remove the '!!' tag or write the value in the usual form (dates as "
                                         "YYYY-MM-DD); quote it to keep it as text."))
            return None

    def positions(self) -> Positions:
        return Positions(self.file, self.values, self.keys)

    def formula_source(self, path: Path_, obj: str) -> tuple[str, FormulaSource]:
        """The formula text to parse and how its positions map onto the file.

        Single-line scalars map column for column. Block and multi-line scalars are
        re-read from the raw file text (the formula language treats newlines as
        spaces) so that every line and column of the formula is the file's own.
        """
        line, column, index, end_line, end_index, style, value = self.nodes[path]
        if style in ("|", ">"):
            lines = self.text.splitlines()[line + 1:end_line]  # the end mark is where the next line starts
            raw = "\n".join(lines).rstrip()
            return raw, FormulaSource(self.file, line + 2, 1, indent=1, obj=obj)
        quoted = style in ("'", '"')
        if line != end_line and not quoted:
            raw = self.text[index:end_index]
            return raw, FormulaSource(self.file, line + 1, column + 1, indent=1, obj=obj)
        offset = 1 if quoted else 0
        return value, FormulaSource(self.file, line + 1, column + 1 + offset, indent=1, obj=obj)


@functools.lru_cache(maxsize=1024)
def _declared_names(text: str) -> set[str]:
    """The names a spec file that is not valid YAML seems to declare: the keys at its first level
    of indentation (the sources and KPIs under 'sources:' and 'kpis:')."""
    keys = re.findall(r"^( +)([A-Za-z_][A-Za-z0-9_]*)[ \t]*:", text, re.M)
    indent = min((len(spaces) for spaces, _ in keys), default=0)
    return {name for spaces, name in keys if len(spaces) == indent}


def _dedented_fields(doc: _Document) -> dict[Path_, tuple[str, SpecError]]:
    """Fields of a source or KPI written one level too far left, as names of their own under
    'sources:' or 'kpis:' (``formula: ...`` under ``kpis:`` after ``revenue:``): their path ->
    (the object above, which they belong to; the error)."""
    found: dict[Path_, tuple[str, SpecError]] = {}
    definitions = _validator("spec.schema.json").schema["$defs"]
    positions = doc.positions()
    for section, kind, label in (("sources", "source", "source"), ("kpis", "kpi", "KPI")):
        mapping = doc.data.get(section)
        if not isinstance(mapping, dict):
            continue
        fields, owner = definitions[kind]["properties"], None
        for name, body in mapping.items():
            if body is None or isinstance(body, dict):
                owner = name
            elif name in fields and owner is not None:
                own = next(iter(mapping[owner] or {}), None)
                column = positions.at((section, owner, own), key=True).column if own is not None else \
                    positions.at((section, owner), key=True).column + 2
                found[(section, name)] = (owner, SpecError(
                    f"'{name}:' is indented as a {label} of its own under '{section}:', not as a field of the "
                    f"{label} '{owner}' above it.", positions.at((section, name), key=True),
                    f"Indent it under '{owner}' (to column {column}, like its other fields)."))
    return found


@functools.lru_cache(maxsize=1024)
def _load_document(shown: str, text: str) -> _Document:
    """Parsed YAML with positions, keyed by file name and content: a long-running process
    (an API server, a notebook, each round of a benchmark) re-reads only the files that changed,
    and checks them against the schema once (_schema_errors). Documents are not modified after
    loading, so sharing them is safe."""
    return _Document(shown, text).load()


# --- schema validation --------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _validator(schema_name: str):
    from jsonschema import Draft202012Validator

    text = resources.files("kpi_engine").joinpath(f"schema/{schema_name}").read_text(encoding="utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _allowed_properties(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return list(schema.get("properties", {}))


def _schema_errors(doc: _Document, schema_name: str) -> list[tuple[Path_, SpecError]]:
    """Each schema problem with the JSON path of the value it concerns, in file order; kept on
    the document, which is shared by every load of the same file content (_load_document)."""
    if schema_name not in doc.schema_errors:
        doc.schema_errors[schema_name] = _check_schema(doc, schema_name)
    return list(doc.schema_errors[schema_name])


def _check_schema(doc: _Document, schema_name: str) -> list[tuple[Path_, SpecError]]:
    validator = _validator(schema_name)
    found: list[tuple[Path_, SpecError]] = []
    for error in validator.iter_errors(doc.data):
        path = tuple(error.absolute_path)
        if _checks_a_key(error):  # the problem is the key itself
            path += (error.instance,)
        found.extend((path, spec_error) for spec_error in _explain(doc, error, validator.schema))
    return sorted(found, key=lambda item: (item[1].location.line or 0, item[1].location.column or 0))


def _checks_a_key(error) -> bool:
    """Whether a jsonschema error comes from ``propertyNames``: its instance is then a key of
    the mapping at its path, not a value."""
    return "propertyNames" in error.absolute_schema_path


def _fitting_branch(error) -> list:
    """The errors of the first oneOf/anyOf alternative whose type fits the value.

    A list given where a name or a list is allowed is checked as a list, and a mapping as
    the object form: reporting "must be a string" for it would send the reader the wrong way.
    When no alternative fits, the first (the main form) is reported.
    """
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for errors in branches.values():
        if not any(sub.validator == "type" and not sub.relative_path for sub in errors):
            return errors
    return branches[min(branches)]


def _formula_problem(text: str) -> FormulaError | None:
    """What the formula parser says about ``text``, so a formula the schema rejects reads the
    same as one given with --formula."""
    try:
        parse(text)
    except FormulaError as error:
        return error
    return None


def _first_repeat(items: list) -> Any:
    """The first item equal to an earlier one, in linear time (a hostile list may be long)."""
    seen = set()
    for item in items:
        key = json.dumps(item, sort_keys=True, default=str)  # lists and mappings are not hashable
        if key in seen:
            return item
        seen.add(key)
    return None


def _explain(doc: _Document, error, root_schema) -> Iterator[SpecError]:
    """Turn one jsonschema error into messages that say what, where and how to fix."""
    path = tuple(error.absolute_path)
    positions = doc.positions()
    where = positions.at(path)
    field_name = ".".join(str(p) for p in path) or "the file"
    if _checks_a_key(error):
        where = positions.at(path + (error.instance,), key=True)
    elif list(error.absolute_schema_path)[-3:-1] == ["properties", "formula"] and isinstance(error.instance, str):
        problem = _formula_problem(error.instance)
        if problem is not None:
            yield SpecError(f"{field_name}: {problem.message}", where, problem.hint)
            return
    if error.validator == "additionalProperties":
        allowed = _allowed_properties(error.schema, root_schema) if isinstance(error.schema, dict) else []
        extras = [key for key in error.instance if key not in allowed] if isinstance(error.instance, dict) else []
        for key in extras:
            hint = did_you_mean(key, allowed) or "Remove it."
            yield SpecError(f"unknown field '{key}' in {field_name}.", positions.at(path + (key,), key=True), hint)
        return
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield SpecError(f"{field_name} is missing the required field '{missing}'.", positions.at(path, key=True),
                        f"Add '{missing}:' to it.")
        return
    if error.validator == "pattern" and path and path[-1] in ("table",):
        yield SpecError(f"{field_name}: {error.instance!r} is not a valid table name.", where,
                        "Write table, schema.table or catalog.schema.table with letters, digits, '_', '$' or '-'. "
                        "A table named otherwise is read with 'sql:' instead of 'table:' "
                        "(sql: SELECT * FROM \"Deal Log\").")
        return
    if error.validator == "pattern" and path and path[-1] == "timezone":
        yield SpecError(f"{field_name}: {error.instance!r} is not a time zone name.", where,
                        "Use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'.")
        return
    if error.validator == "pattern" and path and path[-1] == "currency":
        yield SpecError(f"{field_name}: {error.instance!r} is not a currency code.", where,
                        "Write the 3-letter ISO code in capitals, e.g. USD or EUR.")
        return
    if error.validator == "pattern":
        hint = "Names start with a letter or '_' and contain only letters, digits and '_'."
        if path and path[0] == "sources" and isinstance(error.instance, str):
            hint += (" A warehouse column named otherwise is renamed in the source's 'sql:' "
                     "(sql: SELECT \"Opened At\" AS opened_at, ... FROM ...).")
        yield SpecError(f"{field_name}: {error.instance!r} is not a valid name.", where, hint)
        return
    if error.validator == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        hint = did_you_mean(str(error.instance), [str(o) for o in error.validator_value])
        yield SpecError(f"{field_name}: {error.instance!r} is not one of: {options}.", where, hint or None)
        return
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        article = "an" if expected[0] in "aeiou" else "a"
        got = type(error.instance).__name__.replace("dict", "mapping").replace("list", "list").replace("NoneType", "nothing")
        yield SpecError(f"{field_name} must be {article} {expected}, not {got}.", where,
                        "Fix the value's type (quote it if it should be text).")
        return
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Explain the alternative meant for this kind of value rather than jsonschema's summary.
        for sub in _fitting_branch(error):
            yield from _explain(doc, sub, root_schema)
        return
    if error.validator == "minItems":
        least = "one item" if error.validator_value == 1 else f"{error.validator_value} items"
        state = f"has only {len(error.instance)}" if error.instance else "is empty"
        yield SpecError(f"{field_name} {state}; it needs at least {least}.", where,
                        "Add to the list, or leave the field out.")
        return
    if error.validator in ("minimum", "maximum") and path[-1:] == ("_repeat",):
        bound = "at least" if error.validator == "minimum" else "at most"
        yield SpecError(f"{field_name} is {error.instance:,}; it must be {bound} {error.validator_value:,}.", where,
                        f"A test holds at most {MAX_TEST_ROWS:,} rows; test a rule on a few of them.")
        return
    if error.validator == "maxLength":
        subject = f"{field_name}: the name" if _checks_a_key(error) else field_name
        yield SpecError(f"{subject} is {len(error.instance):,} characters long; "
                        f"the limit is {error.validator_value:,}.", where, "Shorten it.")
        return
    if error.validator == "uniqueItems":
        repeated = _first_repeat(error.instance)
        yield SpecError(f"{field_name} has non-unique items: {repeated!r} is listed more than once.", where,
                        f"Remove the repeated {repeated!r}; each item may appear only once.")
        return
    if error.validator == "minProperties" and not path:
        yield SpecError("the file declares nothing.", where, "Add 'sources:' and/or 'kpis:' to it, or delete it.")
        return
    yield SpecError(f"{field_name}: {error.message}.", where, None)


# --- project loading ------------------------------------------------------------------


def find_project_root(path: str | Path) -> Path:
    root = Path(path)
    if root.is_file() and root.name == CONFIG_FILE:
        root = root.parent
    if not root.exists():
        raise SpecError(f"project folder '{root}' does not exist.", None,
                        "Pass the folder that holds kpi_engine.yaml.")
    if not (root / CONFIG_FILE).is_file():
        raise SpecError(f"'{root}' has no {CONFIG_FILE}.", Location(str(root)),
                        f"Create {CONFIG_FILE} with at least 'name:' (see 'kpi-engine --help'), or pass the project folder.")
    return root


def _read(path: Path, shown: str) -> tuple[str | None, SpecError | None]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)  # never more, whatever the file claims to hold
    except OSError as error:
        return None, SpecError(f"cannot read the file: {error.strerror}.", Location(shown), "Check its permissions.")
    if len(raw) > MAX_SPEC_BYTES:
        return None, SpecError(f"the file is larger than {MAX_SPEC_BYTES:,} bytes, the limit for a spec file.",
                               Location(shown), "Split it into several files (a project reads every .yaml file "
                               "in its folder).")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return None, SpecError(f"the file is not valid UTF-8 (byte 0x{raw[error.start]:02x}).",
                               Location(shown, line, column), "Save it as UTF-8.")


def _spec_files(root: Path) -> list[Path]:
    """The .yaml/.yml files under ``root`` (except kpi_engine.yaml), in path order; hidden files and
    folders are skipped without being walked, and folders reached through a symlink are not followed."""
    files = []
    for folder, folders, names in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix in SPEC_SUFFIXES and name != CONFIG_FILE and path.is_file():
                files.append(path)
        if len(files) > MAX_SPEC_FILES:
            raise SpecError(f"'{root}' holds more than {MAX_SPEC_FILES:,} spec files.", Location(str(root)),
                            "Is this the project folder? Spec files are the .yaml files under it; move other "
                            "YAML elsewhere, or into a folder whose name starts with '.'.")
    return sorted(files)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_project(path: str | Path) -> tuple[Project | None, list[KpiEngineError]]:
    """Load what can be loaded, and every problem found on the way.

    Objects with schema problems are left out of the project and their names kept in
    ``Project.broken``, so that validation can go on checking the rest without
    reporting knock-on "unknown name" errors for them.
    """
    root = find_project_root(path).resolve()
    broken: set[str] = set()
    errors: list[KpiEngineError] = []

    config_file = root / CONFIG_FILE
    config_shown = _display(config_file, root)
    text, error = _read(config_file, config_shown)
    config = None
    if error:
        errors.append(error)
    else:
        doc = _Document(config_shown, text, "Write at least 'name: my_project' and a 'warehouse:'.").load()
        errors.extend(doc.errors)
        if not doc.errors:
            if doc.data is None or not isinstance(doc.data, dict):
                errors.append(SpecError("the project file must be a mapping.", Location(config_shown, 1, 1),
                                        "Write at least 'name: my_project'."))
            else:
                schema_errors = _schema_errors(doc, "project.schema.json")
                errors.extend(error for _, error in schema_errors)
                if not schema_errors:
                    data = doc.data
                    errors.extend(_config_errors(data, doc))
                    granularities, wrong = read_granularities(data.get("granularities"),
                                                              lambda path: doc.positions().at(path, key=True))
                    errors.extend(wrong)
                    calendar = ProjectCalendar(data.get("timezone"), data.get("week_start", "monday"),
                                               data.get("fiscal_year_start", 1), granularities=granularities)
                    config = ProjectConfig(name=data["name"], root=root, warehouse=data.get("warehouse"),
                                           dialect=data.get("dialect"), currency=data.get("currency", "USD"),
                                           positions=doc.positions(), calendar=calendar,
                                           include=tuple(data.get("include", ())), dbt=data.get("dbt"))

    # Every entry of every file, library files first; merged by name below.
    entries: dict[str, dict[str, list[_Entry]]] = {"sources": {}, "kpis": {}, "tests": {}, "queries": {},
                                                     "rollups": {}}
    shown_files = []
    spec_files = [(file, library, f"{library}/{file.relative_to(folder)}" if library.startswith("builtin:") else None)
                  for library, folder in (_libraries(config, errors) if config else []) for file in _spec_files(folder)]
    spec_files += [(file, None, None) for file in _spec_files(root)]
    for path_, library, label in spec_files:
        shown = label or _display(path_, root)
        shown_files.append(shown)
        text, error = _read(path_, shown)
        if error:
            errors.append(error)
            continue
        doc = _load_document(shown, text)
        errors.extend(doc.errors)
        if doc.errors:
            broken.update(_declared_names(text))  # the file's names are not also "unknown" in formulas
        if doc.errors or doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            errors.append(SpecError("a spec file must be a mapping with 'sources:' and/or 'kpis:'.",
                                    Location(shown, 1, 1), "Start the file with 'sources:' or 'kpis:'."))
            continue
        schema_errors = _schema_errors(doc, "spec.schema.json")
        # A field indented one level too little is one mistake: reported once, in place of the
        # schema's errors about it, and the object it belongs to is left out without more errors.
        dedented = _dedented_fields(doc)
        owners = {(section, owner) for (section, _), (owner, _) in dedented.items()}
        # Gone with it: the errors about the misplaced field, and an owner left without a body.
        schema_errors = [item for item in schema_errors if item[0][:2] not in dedented and item[0] not in owners]
        errors.extend(in_file_order([error for _, error in schema_errors] + [e for _, e in dedented.values()]))
        bad_paths = [path for path, _ in schema_errors] + list(dedented) + list(owners)
        for key, value in doc.data.items():
            if key not in entries and isinstance(value, dict):
                # A misspelt section ('sourses:'): its names exist for the author, so the formulas
                # that use them are not reported as well as the misspelling.
                broken.update(str(name) for name in value)
        for section in entries:
            found = doc.data.get(section)
            if not isinstance(found, dict):
                continue
            for name, body in found.items():
                # An object with a schema problem is left out; the rest of the file is still checked.
                if any(path[:2] == (section, name) for path in bad_paths):
                    broken.add(name)
                    continue
                entries[section].setdefault(name, []).append(_Entry(body or {}, doc, library))

    sources: dict[str, SourceSpec] = {}
    kpis: dict[str, KpiSpec] = {}
    tests: dict[str, TestSpec] = {}
    queries: dict[str, QuerySpec] = {}
    rollups: dict[str, RollupSpec] = {}
    for kind, found in ((TestSpec, tests), (QuerySpec, queries), (RollupSpec, rollups)):
        for name, items in entries[kind.SECTION].items():
            # The project's own replaces a library's of the same name as a whole.
            own = [item for item in items if item.library is None] or items
            for extra in own[1:]:
                errors.append(_duplicate(kind.KIND, name, extra.doc.positions().at((kind.SECTION, name), key=True),
                                         own[0].doc.positions().at((kind.SECTION, name), key=True)))
            found[name] = kind(name, own[0].body, own[0].doc.positions(), own[0].library)
    for section, kind, build, found in (("sources", "source", _source, sources), ("kpis", "KPI", _kpi, kpis)):
        for name, items in entries[section].items():
            spec = _merge(section, kind, name, items, build, errors)
            if spec is not None:
                found[name] = spec
    if config is not None:  # a source naming a dbt model reads the relation dbt built for it
        for name, relation in resolve_models(sources, config.dbt, root, errors):
            sources[name] = replace(sources[name], table=relation)
    _inherit(sources, errors)
    _add_conversions(sources, errors)
    _add_time_axes(sources, errors)
    errors.extend(_source_shape_errors(sources))
    errors.extend(_target_errors(kpis))
    errors.extend(_test_errors(tests))
    errors = in_file_order(errors)
    if config is None:
        return None, errors
    return Project(config=config, sources=sources, kpis=kpis, files=tuple(shown_files),
                   broken=frozenset(broken), tests=tests, queries=queries, rollups=rollups), errors


def load_project(path: str | Path) -> Project:
    """Load and schema-check every file of a project; raise ``ProjectInvalid`` listing all problems."""
    project, errors = read_project(path)
    if errors:
        raise ProjectInvalid(errors)
    return project


def _config_errors(data: Mapping[str, Any], doc: _Document) -> Iterator[SpecError]:
    zone = data.get("timezone")
    if zone:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            yield SpecError(f"unknown time zone '{zone}'.", doc.positions().at(("timezone",)),
                            "Use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'.")


@dataclass(frozen=True)
class _Entry:
    body: Mapping[str, Any]
    doc: _Document
    library: str | None  # the include it comes from, None for the project's own files


def _merge(section: str, kind: str, name: str, items: list[_Entry], build, errors: list) -> Any:
    """One spec per name: a project entry overrides a library entry field by field."""
    def where(entry: _Entry) -> Location:
        return entry.doc.positions().at((section, name), key=True)

    own = [item for item in items if item.library is None]
    library = [item for item in items if item.library is not None]
    for group in (own, library):
        for extra in group[1:]:
            errors.append(_duplicate(kind, name, where(extra), where(group[0])))
    base, top = (library[0] if library else None), (own[0] if own else None)
    if base and top:
        base_body = dict(base.body)
        if section == "sources":
            # An override says how the source is read, whatever the library used: table, sql or unmapped.
            if any(key in top.body for key in RELATION_FIELDS):
                for key in RELATION_FIELDS:
                    base_body.pop(key, None)
            if isinstance(base_body.get("map"), dict) and isinstance(top.body.get("map"), dict):
                base_body["map"] = {**base_body["map"], **top.body["map"]}  # column by column
        body = {**base_body, **top.body}
        spec = build(name, body, top.doc, overrides=where(base), fallback=base.doc)
    else:
        entry = top or base
        spec = build(name, dict(entry.body), entry.doc, library=entry.library)
    if section == "kpis" and not spec.formula:
        errors.append(SpecError(f"KPI '{name}' has no formula.", where(top or base),
                                "Add 'formula:'; only a KPI that overrides a library KPI may leave it out."))
        return None
    return spec


def _libraries(config: "ProjectConfig", errors: list) -> list[tuple[str, Path]]:
    """The folders named by ``include:``: a path relative to the project, or builtin:<name>."""
    found = []
    for index, item in enumerate(config.include):
        where = config.positions.at(("include", index))
        if item.startswith("builtin:"):
            name = item.split(":", 1)[1]
            folder = Path(str(resources.files("kpi_engine.definitions").joinpath(name)))
            hint = f"Built-in libraries: {', '.join(builtin_libraries()) or 'none installed'}."
        else:
            folder = (config.root / item).resolve()
            hint = "Give a folder of spec files, relative to the project folder."
        if not folder.is_dir():
            errors.append(SpecError(f"included library '{item}' does not exist.", where, hint))
            continue
        found.append((item, folder))
    return found


def builtin_libraries() -> list[str]:
    """Names of the KPI libraries shipped inside the package (include them as builtin:<name>)."""
    folder = resources.files("kpi_engine.definitions")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(("_", ".")))


def _duplicate(kind: str, name: str, here: Location, first: Location) -> SpecError:
    return SpecError(f"{kind} '{name}' is defined twice (first at {first.file}:{first.line}).", here,
                     f"Rename or remove one of them; {kind} names are unique across the project.")


def _source(name: str, body: Mapping[str, Any], doc: _Document, library: str | None = None,
            overrides: Location | None = None, fallback: _Document | None = None) -> SourceSpec:
    dimensions = []
    for item in body.get("dimensions", []):
        if isinstance(item, str):
            dimensions.append(Dimension(item, item))
        else:
            dimensions.append(Dimension(item["name"], item.get("column", item["name"]),
                                        item.get("label"), item.get("description")))
    key = body.get("primary_key", ())
    relationships = tuple(_relationship(r) for r in body.get("relationships", []))
    path = ("sources", name)
    column_map = {column: _row_formula(doc, fallback, path + ("map", column), value, f"source '{name}', map '{column}'")
                  for column, value in (body.get("map") or {}).items()}
    filters = (_row_formula(doc, fallback, path + ("where",), body["where"], f"source '{name}', where"),) \
        if body.get("where") is not None else ()
    return SourceSpec(
        name=name, table=body.get("table"), sql=body.get("sql"), time=body.get("time"),
        primary_key=(key,) if isinstance(key, str) else tuple(key),
        dimensions=tuple(dimensions), columns=dict(body.get("columns", {})), relationships=relationships,
        label=body.get("label"), description=body.get("description"),
        positions=doc.positions(), path=path, library=library, overrides=overrides,
        column_map=column_map, filters=filters, extends=body.get("extends"), unmapped=bool(body.get("unmapped")),
        valid_from=body.get("valid_from"), valid_to=body.get("valid_to"),
        declared=frozenset(body), time_end=body.get("time_end"), conversion=_conversion(body.get("conversion")),
        time_axes=tuple(body.get("time_axes", ())),
        freshness_days=int(body["freshness"].split()[0]) if body.get("freshness") else None, model=body.get("model"))


def _relationship(body: Mapping[str, Any]) -> Relationship:
    """``on:`` is one column, a list of columns named alike on both sides, or a mapping
    {column here: column there} (a composite key)."""
    on = body["on"]
    pairs: tuple[tuple[str, str], ...] = ()
    if isinstance(on, list):
        pairs = tuple((c, c) for c in on)
    elif isinstance(on, dict):
        pairs = tuple(on.items())
    first = pairs[0][0] if pairs else on
    return Relationship(body["to"], first, body.get("to_column"), body.get("type", "many_to_one"), body.get("name"),
                        pairs, body.get("as_of"))


def _conversion(body: Any) -> ConversionSpec | None:
    """A source's ``conversion:`` as written (the schema checks its shape, _add_conversions the rest)."""
    if not isinstance(body, Mapping) or not all(isinstance(body.get(key), str) for key in ("from", "to", "per")):
        return None
    within = parse_window(body["within"]) or (0, "day") if body.get("within") is not None else None
    return ConversionSpec(body["from"], body["to"], body["per"], within, body.get("attribution") or "last_touch",
                          tuple(body.get("same") or ()))


def _row_formula(doc: _Document, fallback: _Document | None, path: Path_, value: Any, obj: str) -> RowFormula:
    """A map: value or where: condition as formula text with its file position. Constants
    (0, true, null) are written as formulas; an entry the override does not repeat is read
    from the library's file."""
    owner = doc if path in doc.nodes or fallback is None else fallback
    if isinstance(value, str):
        return RowFormula(*owner.formula_source(path, obj))
    text = "null" if value is None else "true" if value is True else "false" if value is False else str(value)
    line, column = owner.values.get(path, (1, 1))
    return RowFormula(text, FormulaSource(owner.file, line, column, indent=1, obj=obj))


_INHERITED = ("time", "time_end", "primary_key", "dimensions", "relationships", "columns", "valid_from", "valid_to")


def _inherit(sources: dict[str, SourceSpec], errors: list) -> None:
    """Sources with ``extends:`` read the rows of another source (its table or sql, map and
    where conditions) unless they say how to read their own, and take its time, key,
    dimensions, relationships and column types unless they declare them."""
    done: dict[str, SourceSpec] = {}

    def complete(name: str, chain: tuple[str, ...]) -> SourceSpec:
        if name in done:
            return done[name]
        source = sources[name]
        base_name = source.extends
        if base_name is None:
            done[name] = source
            return source
        if base_name not in sources:
            errors.append(SpecError(f"source '{name}' extends unknown source '{base_name}'.",
                                    source.where("extends"), did_you_mean(base_name, sources) or None))
            done[name] = source
            return source
        if base_name in chain + (name,):
            cycle = " -> ".join(chain + (name, base_name))
            errors.append(SpecError(f"sources extend each other in a cycle: {cycle}.", source.where("extends"),
                                    "Let one of them read its own table or sql."))
            done[name] = source
            return source
        base = complete(base_name, chain + (name,))
        changes: dict[str, Any] = {field_: getattr(base, field_) for field_ in _INHERITED if field_ not in source.declared}
        if not set(RELATION_FIELDS) & source.declared:
            changes.update(table=base.table, sql=base.sql, unmapped=base.unmapped, model=base.model,
                           column_map={**base.column_map, **source.column_map},
                           filters=base.filters + source.filters, rows_of=base.rows_of or base.name)
        done[name] = replace(source, **changes)
        return done[name]

    for name in list(sources):
        sources[name] = complete(name, ())


# What a conversion source may declare besides its conversion: the rest comes from its 'from' source.
_CONVERSION_FIELDS = frozenset({"conversion", "label", "description", "time_axes"})


def _add_conversions(sources: dict[str, SourceSpec], errors: list) -> None:
    """A conversion source reads the rows of its ``from`` source (conversions.py adds the
    conversions to them): it takes that source's time, dimensions, relationships, map and
    column types, so its aggregates are sliced and placed in time as the base events are."""
    for name, source in list(sources.items()):
        if source.extends and source.extends in sources and sources[source.extends].conversion:
            errors.append(SpecError(f"source '{name}' extends conversion source '{source.extends}'.",
                                    source.where("extends"), "Declare a conversion source of its own instead."))
        spec = source.conversion
        if spec is None:
            continue
        extra = sorted(source.declared - _CONVERSION_FIELDS)
        if extra:
            errors.append(SpecError(f"conversion source '{name}' also declares {', '.join(extra)}.",
                                    source.where(extra[0], key=True),
                                    f"A conversion source reads the rows, time, dimensions and map of its 'from' "
                                    f"source ('{spec.from_}'): declare them there, or filter with a KPI's 'where'."))
            continue
        problem = None
        for role, other in (("from", spec.from_), ("to", spec.to)):
            target = sources.get(other)
            if target is None:
                problem = (role, f"'{role}: {other}' is not a source.", did_you_mean(other, sources) or None)
            elif target.conversion is not None:
                problem = (role, f"'{role}: {other}' is a conversion source itself.",
                           "Name the sources of events: conversions of conversions are not supported.")
            elif not target.time:
                problem = (role, f"'{role}: {other}' has no time column.", f"Declare 'time:' on source '{other}'.")
            elif target.time_end:
                problem = (role, f"'{role}: {other}' is an interval source.",
                           "Conversions join events that happen at one time; use a source of events.")
            if problem:
                break
        if problem is None and spec.from_ == spec.to:
            problem = ("to", f"'from' and 'to' are both '{spec.from_}'.",
                       "A conversion follows a base event of another source: each row would convert itself.")
        if problem is None and spec.within == (0, "day"):
            problem = ("within", "'within' is not a length of time.", "Write e.g. '7 days', '30 minutes' or '1 month'.")
        if problem is not None:
            role, message, hint = problem
            errors.append(SpecError(f"conversion source '{name}': {message}", source.where("conversion", role), hint))
            continue
        base, to = sources[spec.from_], sources[spec.to]
        added = {"converted_at": to.columns.get(to.time, "timestamp"), "seconds_to_convert": "number",
                 "days_to_convert": "number"}
        sources[name] = replace(source, table=None, sql=None, time=base.time, primary_key=(),
                                dimensions=base.dimensions, relationships=base.relationships,
                                columns={**base.columns, **added} if base.columns else {},
                                column_map=base.column_map, filters=(), rows_of=base.rows_of or base.name,
                                unmapped=base.unmapped or to.unmapped, freshness_days=None,
                                time_axes=source.time_axes if "time_axes" in source.declared else ())


def axis_source(source: str, axis: str) -> str:
    """The name of the view of ``source`` whose rows are placed in time by ``axis``."""
    return f"{source}__at__{axis}"


def relation_name(source: SourceSpec) -> str:
    """What a source reads, for listings: its table, '(sql)', or the events a conversion source joins."""
    if source.conversion is not None:
        return f"(conversions: {source.conversion.from_} -> {source.conversion.to})"
    return source.table or "(sql)"


def display_name(source: SourceSpec) -> str:
    """A source as users write it: 'deals at won_at' for the view of a time axis."""
    return f"{source.axis_of[0]} at {source.axis_of[1]}" if source.axis_of else source.name


def _add_time_axes(sources: dict[str, SourceSpec], errors: list) -> None:
    """A source with ``time_axes`` gets one hidden view per axis: its rows, placed in time by
    that column (as a source that extends it with another ``time``). Formulas reach them with
    ``count(deals at won_at)``, a KPI's ``time:`` or ``--time-axis``."""
    for name, source in list(sources.items()):
        for i, axis in enumerate(source.time_axes):
            if not source.time:
                errors.append(SpecError(f"source '{name}' declares 'time_axes' but no 'time' (its main axis).",
                                        source.where("time_axes"), "Add 'time: <column>' to the source."))
                break
            if axis == source.time:
                # An override that places the rows by one of the axes it inherits (contacts placed
                # by mql_at) keeps the other axes; listing the time column among one's own is a slip.
                if source.path + ("time_axes",) in source.positions.values:  # written in this file
                    errors.append(SpecError(f"'{axis}' is already the time column of source '{name}'.",
                                            source.where("time_axes", i), "List only its other time columns."))
                continue
            view = axis_source(name, axis)
            if view in sources:
                errors.append(SpecError(f"source '{view}' clashes with the view of source '{name}' at '{axis}'.",
                                        source.where("time_axes", i), f"Rename source '{view}'."))
                continue
            sources[view] = replace(source, name=view, time=axis, time_axes=(), time_end=None, extends=name,
                                    rows_of=source.rows_of or name, axis_of=(name, axis), freshness_days=None)


def _kpi(name: str, body: Mapping[str, Any], doc: _Document, library: str | None = None,
         overrides: Location | None = None, fallback: _Document | None = None) -> KpiSpec:
    path = ("kpis", name)
    formula_doc = doc if (path + ("formula",)) in doc.nodes or fallback is None else fallback
    text, source = formula_doc.formula_source(path + ("formula",), f"kpi '{name}'") \
        if (path + ("formula",)) in formula_doc.nodes else ("", FormulaSource(doc.file, obj=f"kpi '{name}'"))
    dims = body.get("dimensions")
    return KpiSpec(
        name=name, formula=text, formula_source=source, label=body.get("label"),
        description=body.get("description"), unit=body.get("unit", "number"), format=body.get("format"),
        owner=body.get("owner"), tags=tuple(body.get("tags", ())),
        dimensions=tuple(dims) if dims is not None else None, target=body.get("target"),
        positions=doc.positions(), path=path, library=library, overrides=overrides,
        fill_nulls_with=body.get("fill_nulls_with"),
        matures_after_days=int(body["matures_after"].split()[0]) if body.get("matures_after") else None,
        time=body.get("time"))


def _source_shape_errors(sources: Mapping[str, SourceSpec]) -> Iterator[SpecError]:
    """Checks the schema does not express readably: exactly one of table/sql, unique dimensions."""
    for source in sources.values():
        inherits = source.extends and not set(RELATION_FIELDS) & source.declared  # the source it extends is checked
        # a model's relation fills in ``table``: a table counts only when written too
        reads = bool(source.sql) + bool(source.model) + bool(source.table and (not source.model
                                                                              or "table" in source.declared))
        if not source.unmapped and not inherits and not source.conversion and reads != 1:
            fields_ = "'table', 'sql' and 'model'" if source.model else "'table' and 'sql'"
            yield SpecError(f"source '{source.name}' needs exactly one of {fields_}.",
                            source.where(key=True),
                            "Use 'table: schema.name' for a table or view, 'sql: select ...' for a derived source, "
                            "'model: name' for a dbt model, or 'unmapped: true' when the warehouse has no such data.")
        if source.freshness_days is not None and not source.time:
            yield SpecError(f"source '{source.name}' declares 'freshness' but has no time column to measure it on.",
                            source.where("freshness"), "Add 'time: <column>' to the source, or remove 'freshness'.")
        if source.time_end and not source.time:
            yield SpecError(f"source '{source.name}' declares 'time_end' but no 'time' for its rows to start at.",
                            source.where("time_end"),
                            "An interval source needs both: 'time: <start column>' and 'time_end: <end column>'.")
        if source.valid_to and not source.valid_from:
            yield SpecError(f"source '{source.name}' declares 'valid_to' but no 'valid_from'.", source.where("valid_to"),
                            "A history source needs 'valid_from: <column>' (when each version starts); 'valid_to' "
                            "is optional (when it ends, empty for the current one).")
        if source.valid_from and not [k for k in source.primary_key if k != source.valid_from]:
            yield SpecError(f"history source '{source.name}' declares no key its versions belong to.",
                            source.where("valid_from"),
                            "Declare the entity key, e.g. 'primary_key: customer_id': one version of each key "
                            "holds at any one time.")
        seen = set()
        for i, dim in enumerate(source.dimensions):
            if dim.name in seen:
                yield SpecError(f"dimension '{dim.name}' is declared twice.", source.where("dimensions", i),
                                "Remove the second one.")
            seen.add(dim.name)


def _target_errors(kpis: Mapping[str, KpiSpec]) -> Iterator[SpecError]:
    """A target's min and max are finite numbers a float can hold (the schema admits 10**400,
    .inf and .nan, which no value can be compared with), and min is not above max."""
    for kpi in kpis.values():
        target = kpi.target or {}
        bounds = {}
        for key in ("min", "max"):
            value = target.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if _finite(value) is None:
                    yield SpecError(f"target {key} {_short(value)} is not a finite number a float can hold.",
                                    kpi.where("target", key), "Write a number such as 100 or 0.25.")
                else:
                    bounds[key] = value
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            yield SpecError(f"target min {bounds['min']:g} is above target max {bounds['max']:g}: no value could be "
                            "on target.", kpi.where("target"), "Swap them, or fix the one that is wrong.")


def _test_errors(tests: Mapping[str, TestSpec]) -> Iterator[SpecError]:
    """A KPI test holds at most MAX_TEST_ROWS rows, and its values are ones a warehouse column can
    hold: text, true/false, dates and times, whole numbers within 64 bits, finite numbers."""
    for test in tests.values():
        given = test.body.get("given") or {}
        rows = sum(row.get("_repeat", 1) for table in given.values() for row in table)
        if rows > MAX_TEST_ROWS:
            yield SpecError(f"the test has {rows:,} rows; the limit is {MAX_TEST_ROWS:,}.", test.where("given"),
                            "Test a rule on a few rows: lower the '_repeat' counts.")
        cells = [(("given", table, i, column), value) for table, table_rows in given.items()
                 for i, row in enumerate(table_rows) for column, value in row.items() if column != "_repeat"]
        cells += [(("expect", i, column), value) for i, row in enumerate(test.body.get("expect") or [])
                  for column, value in row.items()]
        for path, value in cells:
            problem = _cell_problem(value)
            if problem:
                yield SpecError(f"{'.'.join(str(p) for p in path)}: {problem}.", test.where(*path),
                                "Write text, true/false, a number, a date (YYYY-MM-DD) or a date and time.")


_BIGINT = 2 ** 63 - 1


def _cell_problem(value: Any) -> str | None:
    if value is None or isinstance(value, (str, bool, dt.date)):
        return None
    if isinstance(value, int):
        return None if -_BIGINT <= value <= _BIGINT else f"{_short(value)} does not fit in a 64-bit whole number"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    kind = {dict: "a mapping", list: "a list", bytes: "binary data (!!binary)"}.get(type(value), type(value).__name__)
    return f"a test value cannot be {kind}"


def _finite(value: int | float) -> float | None:
    """``value`` as a float, or None when no float holds it (10**400, .inf, .nan)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text):,} digits)"
