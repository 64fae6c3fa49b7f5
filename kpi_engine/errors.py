"""The project's error types.

Library code raises only these. Each error carries *where* (a file position or a
named object) and *how to fix it*, so the CLI can print one readable paragraph and
choose an exit code without ever showing a traceback. This module imports nothing
else from the package.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Location:
    """A position in a spec file (1-based line and column) or a named object."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    obj: str | None = None  # e.g. "kpi 'cost_per_lead'" when there is no file

    def __str__(self) -> str:
        if self.file:
            parts = [self.file]
            if self.line is not None:
                parts.append(str(self.line))
                if self.column is not None:
                    parts.append(str(self.column))
            where = ":".join(parts)
            return f"{where} ({self.obj})" if self.obj else where
        return self.obj or "<unknown>"


class KpiEngineError(Exception):
    """Base class: message, optional location, optional hint on how to fix it."""

    exit_code = 1

    def __init__(self, message: str, location: Location | None = None, hint: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint
        self.detail = detail  # extra lines shown verbatim (e.g. a formula with a caret)

    def __str__(self) -> str:
        head = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            head = f"{head} {self.hint}"
        return f"{head}\n{self.detail}" if self.detail else head


class SpecError(KpiEngineError):
    """A spec file cannot be read, is not valid YAML, or breaks the schema."""


class FormulaError(KpiEngineError):
    """A formula does not parse, or uses something that does not exist."""


class TextColumnError(FormulaError):
    """A numeric aggregate (sum, avg, ...) over a column the warehouse types as text: the engine
    asks the warehouse which value makes it text (``Connection.text_value``) to say so."""

    def __init__(self, message: str, location: Location | None, hint: str | None, detail: str | None,
                 source: str, column: str, func: str):
        super().__init__(message, location, hint, detail)
        self.source, self.column, self.func = source, column, func


class ResolveError(KpiEngineError):
    """A project is well-formed but inconsistent: unknown names, cycles, dimensions."""


class QueryError(KpiEngineError):
    """A request (KPIs, dimensions, grain, filters) cannot be compiled."""


class UsageError(KpiEngineError):
    """The command line or API call itself is wrong."""

    exit_code = 2


class OutputError(KpiEngineError):
    """A result, report or project cannot be written: a read-only folder, a full disk, a name too long."""


class PluginError(KpiEngineError):
    """An adapter or plugin is missing, failed to load, or broke its contract."""


class WarehouseError(KpiEngineError):
    """The warehouse cannot be opened, or a query failed there."""


class ConnectionFailed(WarehouseError):
    """The warehouse cannot be reached or opened: unreachable host, wrong password, no such database."""

    exit_code = 3


class QueryFailed(WarehouseError):
    """The warehouse ran the query and refused it: a missing table or column, a type error."""

    exit_code = 4


class QueryTimeout(WarehouseError):
    """The query ran longer than the configured timeout and was cancelled in the warehouse."""

    exit_code = 5


class ProjectInvalid(KpiEngineError):
    """Several problems found at once; ``errors`` holds each, in file order."""

    def __init__(self, errors: Sequence[KpiEngineError]):
        self.errors = list(errors)
        count = len(self.errors)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} found")

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def in_file_order(errors: Iterable[KpiEngineError]) -> list[KpiEngineError]:
    """Errors sorted by file, line and column; errors without a file come last."""
    def key(error: KpiEngineError):
        loc = error.location or Location()
        return (loc.file is None, loc.file or "", loc.line or 0, loc.column or 0)

    return sorted(errors, key=key)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A 'Did you mean ...?' hint, or a list of what exists when nothing is close."""
    options = sorted(set(candidates))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"Did you mean '{close[0]}'?"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"Known names: {shown}."
