"""The plugin registry: one pluggy manager fed from the ``kpi_engine`` entry-point group.

A plugin that fails to import, or whose hook raises, is recorded with its name and
the reason; the other plugins keep working and ``kpi-engine plugins`` shows both.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Mapping

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .hookspecs import Adapter, FormulaFunction, ResultWriter

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: Comma-separated entry-point names to skip, e.g. for debugging a broken plugin.
DISABLE_ENV = "KPI_ENGINE_DISABLE_PLUGINS"
#: The package that provides each adapter kpi-engine's repository ships as a plugin (plugins/).
PLUGIN_PACKAGES = {"sqlite": "kpi-engine-sqlite", "mysql": "kpi-engine-mysql", "mariadb": "kpi-engine-mysql",
                   "clickhouse": "kpi-engine-clickhouse",
                   **{name: f"kpi-engine-cloud[{name}]" for name in ("snowflake", "bigquery", "redshift", "databricks",
                                                                   "trino")}}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None  # why the plugin could not be used


@dataclass(frozen=True)
class AdapterInfo:
    adapter: type[Adapter]
    plugin: PluginInfo


class Registry:
    def __init__(self, load_entry_points: bool = True):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._adapters: dict[str, AdapterInfo] | None = None
        self._functions: dict[str, tuple[FormulaFunction, PluginInfo]] | None = None
        self._writers: dict[str, tuple[ResultWriter, PluginInfo]] | None = None
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        disabled = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in disabled:
                continue
            dist = getattr(entry_point, "dist", None)
            info = PluginInfo(entry_point.name, entry_point.value, dist.name if dist else None,
                              dist.version if dist else None)
            if entry_point.name in self.plugins:
                self._record(_failed(info, f"another installed plugin is already named '{entry_point.name}'"))
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:  # a broken plugin must not take the others down
                self._record(_failed(info, f"import failed: {type(error).__name__}: {error}"))
                continue
            self.register(plugin, info)

    def register(self, plugin: Any, info: PluginInfo | str) -> None:
        """Register a plugin object (a module or any object with hook implementations)."""
        if isinstance(info, str):
            info = PluginInfo(info, getattr(plugin, "__name__", type(plugin).__name__))
        if info.name in self.plugins:
            self._record(_failed(info, f"another plugin is already registered as '{info.name}'"))
            return
        try:
            self.manager.register(plugin, name=info.name)
            self.manager.check_pending()
        except (ValueError, pluggy.PluginValidationError) as error:
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            self._record(_failed(info, f"invalid plugin: {error}"))
            return
        self.plugins[info.name] = info
        self._adapters = self._functions = self._writers = None

    def _record(self, info: PluginInfo) -> None:
        """Keep a failed plugin's record without replacing a working one of the same name."""
        key, i = info.name, 2
        while key in self.plugins:
            key, i = f"{info.name}#{i}", i + 1
        self.plugins[key] = info

    def _collect(self, hook: str, key, problem_of) -> dict[str, tuple[Any, PluginInfo]]:
        """Call one hook plugin by plugin: a plugin that raises or returns something
        invalid is reported by name and skipped; the others keep working."""
        found: dict[str, tuple[Any, PluginInfo]] = {}
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            info = self.plugins[impl.plugin_name]
            try:
                items = list(impl.function() or [])
            except Exception as error:
                self.plugins[info.name] = _failed(info, f"{hook} raised {type(error).__name__}: {error}")
                continue
            for item in items:
                problem = problem_of(item)
                if problem is None and key(item) in found:
                    problem = f"the name '{key(item)}' is already registered by {found[key(item)][1].name}"
                if problem:
                    self.plugins[info.name] = _failed(info, problem)
                    continue
                found[key(item)] = (item, info)
        return found

    def adapters(self) -> Mapping[str, AdapterInfo]:
        """Every usable adapter by name."""
        if self._adapters is None:
            found = self._collect("kpi_engine_adapters", lambda cls: cls.name, _adapter_problem)
            self._adapters = {name: AdapterInfo(cls, info) for name, (cls, info) in found.items()}
        return self._adapters

    def functions(self) -> Mapping[str, FormulaFunction]:
        """Formula functions added by plugins, by name."""
        if self._functions is None:
            from .resolve import AGGREGATES, FUNCTIONS, TIME_FUNCTIONS

            builtin = set(FUNCTIONS) | AGGREGATES | set(TIME_FUNCTIONS)

            def problem(fn) -> str | None:
                if not isinstance(fn, FormulaFunction):
                    return f"{fn!r} is not a kpi_engine.hookspecs.FormulaFunction"
                if fn.name in builtin or not fn.name.isidentifier() or fn.name != fn.name.lower():
                    return f"function name '{fn.name}' clashes with a built-in or is not a lowercase name"
                return None

            self._functions = self._collect("kpi_engine_functions", lambda fn: fn.name, problem)
        return {name: fn for name, (fn, _) in self._functions.items()}

    def writers(self) -> Mapping[str, ResultWriter]:
        """Output formats added by plugins, by name."""
        if self._writers is None:
            from .output import FORMATS

            def problem(writer) -> str | None:
                if not isinstance(writer, ResultWriter):
                    return f"{writer!r} is not a kpi_engine.hookspecs.ResultWriter"
                if writer.name in FORMATS:
                    return f"output format '{writer.name}' is built in"
                return None

            self._writers = self._collect("kpi_engine_writers", lambda w: w.name, problem)
        return {name: writer for name, (writer, _) in self._writers.items()}

    def provided_by(self, plugin: str) -> dict[str, list[str]]:
        """What one plugin adds: adapter, function and output-format names."""
        self.functions(), self.writers()
        return {"adapters": [n for n, a in self.adapters().items() if a.plugin.name == plugin],
                "functions": [n for n, (_, info) in self._functions.items() if info.name == plugin],
                "formats": [n for n, (_, info) in self._writers.items() if info.name == plugin]}

    def adapters_for_dialect(self, dialect: str) -> list[type[Adapter]]:
        return [info.adapter for info in self.adapters().values() if info.adapter.dialect == dialect]

    def adapter(self, name: str) -> type[Adapter]:
        """The adapter called ``name``, or whose URL schemes include it."""
        adapters = self.adapters()
        by_scheme = next((info for info in adapters.values() if name in getattr(info.adapter, "schemes", ())), None)
        if name not in adapters and by_scheme is not None:
            return by_scheme.adapter
        if name not in adapters:
            broken = [p for p in self.plugins.values() if p.error]
            note = "".join(f" Plugin '{p.name}' failed: {p.error}." for p in broken)
            hint = (did_you_mean(name, adapters) or "No adapter is registered.") + \
                " Install the plugin that provides it; 'kpi-engine plugins' lists what is installed."
            if name in PLUGIN_PACKAGES and not note:  # one of ours: say which package
                package = PLUGIN_PACKAGES[name]
                folder, extra = package.partition("[")[0], package[len(package.partition("[")[0]):]
                hint = (f"Install it with: pip install '{package}' (from a clone of kpi-engine: "
                        f"pip install './plugins/{folder}{extra}').")
            raise PluginError(f"no adapter named '{name}' is installed.{note}", None, hint)
        return adapters[name].adapter


def _failed(info: PluginInfo, reason: str) -> PluginInfo:
    return PluginInfo(info.name, info.module, info.distribution, info.version, reason)


def _adapter_problem(cls: Any) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        return f"{cls!r} is not a subclass of kpi_engine.hookspecs.Adapter"
    for attribute in ("name", "dialect"):
        if not isinstance(getattr(cls, attribute, None), str):
            return f"adapter {cls.__name__} does not set '{attribute}'"
    return None


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    return Registry()
