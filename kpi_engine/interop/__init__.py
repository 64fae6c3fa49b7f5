"""Importing semantic layers (dbt MetricFlow, Cube) into kpi-engine specs, and exporting back.

Each translator builds plain ``sources`` and ``kpis`` mappings and a ``Report`` of every construct
it could not translate (file:line, what, why). ``write_project`` writes them as spec files and
then checks them with the engine itself: a definition the engine refuses is taken out and
reported too, so what is written always validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import FormulaError, KpiEngineError, SpecError, UsageError
from ..files import write_atomically
from ..parser import parse

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Skipped:
    file: str
    line: int | None
    construct: str  # e.g. "metric 'visit_to_buy' (conversion)"
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.construct}: {self.reason}"


@dataclass
class Report:
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[Skipped] = field(default_factory=list)  # translated, with a difference worth knowing
    sources: list[str] = field(default_factory=list)
    kpis: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def skip(self, file: str, line: int | None, construct: str, reason: str) -> None:
        self.skipped.append(Skipped(file, line, construct, reason))

    def note(self, file: str, line: int | None, construct: str, reason: str) -> None:
        self.notes.append(Skipped(file, line, construct, reason))

    def lines(self, verb: str = "Translated") -> list[str]:
        out = [f"{verb} {len(self.sources)} source(s) and {len(self.kpis)} KPI(s)"
               + (f" into {', '.join(self.files)}." if self.files else ".")]
        if self.notes:
            out.append(f"{verb} with a difference ({len(self.notes)}):")
            out += [f"  {item}" for item in self.notes]
        if self.skipped:
            out.append(f"Not {verb.lower()} ({len(self.skipped)}):")
            out += [f"  {item}" for item in self.skipped]
        return out


class Untranslatable(Exception):
    """A construct with no exact kpi-engine equivalent; the message says why."""


# What reading a construct of the wrong YAML shape raises (a list where a mapping belongs, ...):
# reported for that construct like any other, never a traceback.
NOT_TRANSLATED = (Untranslatable, AttributeError, TypeError, ValueError, KeyError)


def mappings(value: Any) -> list[tuple[int, dict]]:
    """(index, item) of the mappings of a YAML list (anything else in it is no construct)."""
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)] if isinstance(value, list) else []


def why_not(error: Exception) -> str:
    if isinstance(error, Untranslatable):
        return str(error)
    return f"its YAML does not have the documented shape ({type(error).__name__}: {error})"


def formula_of(sql: str, what: str) -> str:
    """A SQL expression as a formula, when it is one in the formula language too (columns,
    literals, arithmetic, comparisons, and/or/not, in, between, is null, coalesce, ...)."""
    text = " ".join(str(sql).split())
    if re.search(r"::|\|\||\bcase\b|\bcast\b|\"|`|\[", text, re.I):
        raise Untranslatable(f"the SQL {what} '{text[:80]}' uses SQL the formula language does not read "
                             "(CASE, casts, quoted names or concatenation); write it as a formula by hand")
    try:
        parse(text)
    except FormulaError as error:
        raise Untranslatable(f"the SQL {what} '{text[:80]}' is not a formula: {error.message}") from None
    return text


def column_of(sql: str | None, default: str, what: str) -> str:
    """A column name from a SQL expression that is just a (possibly table-qualified) column."""
    text = (str(sql).strip() if sql is not None else default)
    text = re.sub(r"^\{CUBE\}\.|^\$\{CUBE\}\.", "", text)
    if IDENTIFIER.match(text):
        return text
    raise Untranslatable(f"the {what} '{text[:80]}' is an expression, not a column")


def dump(data: Mapping[str, Any], header: str) -> str:
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):  # long formulas stay on one line; multi-line text as a block
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(dict(data), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)
    return f"# {header}\n{body}"


def write_project(out: Path, prefix: str, sources: dict, kpis: dict, report: Report, header: str,
                  project_file: str | None) -> None:
    """Write ``PREFIX_sources.yaml`` and ``PREFIX_kpis.yaml`` (and kpi_engine.yaml when the folder
    has none), after dropping whatever the engine refuses, reporting why, until the rest validates.
    The check runs on a scratch copy with dbt models read as tables of the same name, so it needs
    neither a manifest nor a warehouse."""
    import tempfile

    from ..engine import check_project

    for kind, table in (("source", sources), ("kpi", kpis)):
        for name in [name for name in table if not (IDENTIFIER.match(str(name)) and len(str(name)) <= 128)]:
            table.pop(name)
            report.skip(f"{prefix}_{kind}s.yaml", None, f"{kind} '{name}'",
                        "its name is not a kpi-engine name (letters, digits and '_', not starting with a digit)")
    with tempfile.TemporaryDirectory(prefix="kpi-engine-import-") as scratch:
        folder = Path(scratch)
        write_atomically(folder / "kpi_engine.yaml", "name: imported\n")
        for _ in range(1000):  # each round removes at least one refused definition
            tables = {name: {("table" if key == "model" else key): value for key, value in body.items()}
                      for name, body in sources.items()}
            owners: dict[tuple[str, int], tuple[str, str]] = {}
            for file, kind, content in (("sources.yaml", "source", tables), ("kpis.yaml", "kpi", kpis)):
                text = dump({f"{kind}s": content}, header) if content else ""
                write_atomically(folder / file, text)
                owners.update(_entries(file, kind, text))
            _, errors = check_project(folder, describe=False)
            errors = [error for error in errors if "the file is empty" not in error.message]
            refused = False
            for error in errors:
                kind, name = _owner(error, owners)
                table = sources if kind == "source" else kpis if kind == "kpi" else None
                if table is None or name not in table:
                    continue
                table.pop(name)
                report.skip(f"{prefix}_{kind}s.yaml", None, f"{kind} '{name}' as translated",
                            f"the engine refuses it: {error.message}")
                refused = True
            if not refused:
                if errors:  # a problem of no single definition: a bug of the translator, said plainly
                    raise SpecError(f"the translated definitions do not validate: {errors[0].message}", None,
                                    "Please report it with the input files; nothing was written.")
                break
    report.sources, report.kpis = list(sources), list(kpis)
    if not sources and not kpis and not out.exists():
        return  # nothing to write: no folder left behind
    out.mkdir(parents=True, exist_ok=True)
    config = out / "kpi_engine.yaml"
    if not config.exists() and (sources or kpis):
        write_atomically(config, project_file or f"name: {re.sub(r'[^A-Za-z0-9_]', '_', out.resolve().name)}\n")
    report.files = []
    for section, content in (("sources", sources), ("kpis", kpis)):
        path = out / f"{prefix}_{section}.yaml"
        if content:
            write_atomically(path, dump({section: content}, header))
            report.files.append(str(path))
        elif path.exists():
            path.unlink()  # an import that yields nothing leaves no stale definitions behind


def _entries(file: str, kind: str, text: str) -> dict[tuple[str, int], tuple[str, str]]:
    """(file, line) -> (kind, name) of every line of a dumped section: the entry it belongs to."""
    owners, current = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^  ([A-Za-z_][A-Za-z0-9_]*):", line)
        if match:
            current = match.group(1)
        if current is not None:
            owners[(file, number)] = (kind, current)
    return owners


def _owner(error: KpiEngineError, owners: dict) -> tuple[str | None, str | None]:
    """The definition an error is about: named in its location or message, else found by its line."""
    text = str(error.location.obj if error.location and error.location.obj else error.message)
    match = re.search(r"\b(kpi|KPI|source) '([^']+)'", text) or re.search(r"\b(kpi|KPI|source) '([^']+)'",
                                                                           error.message)
    if match:
        return match.group(1).lower(), match.group(2)
    location = error.location
    if location and location.file and location.line:
        return owners.get((Path(location.file).name, location.line), (None, None))
    return None, None


def need_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"'{path}' does not exist.", None, f"Give the {what}.")
    return path


def yaml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()
                  and not any(part.startswith(".") or part in ("target", "dbt_packages") for part in
                              p.relative_to(path).parts))
