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
from .hookspecs import Adapter

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: Comma-separated entry-point names to skip, e.g. for debugging a broken plugin.
DISABLE_ENV = "KPI_ENGINE_DISABLE_PLUGINS"


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
        self._adapters = None

    def _record(self, info: PluginInfo) -> None:
        """Keep a failed plugin's record without replacing a working one of the same name."""
        key, i = info.name, 2
        while key in self.plugins:
            key, i = f"{info.name}#{i}", i + 1
        self.plugins[key] = info

    def adapters(self) -> Mapping[str, AdapterInfo]:
        """Every usable adapter by name. Each plugin's hook is called on its own, so one
        that raises is reported and skipped instead of breaking the rest."""
        if self._adapters is not None:
            return self._adapters
        found: dict[str, AdapterInfo] = {}
        for impl in self.manager.hook.kpi_engine_adapters.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            try:
                classes = list(impl.function() or [])
            except Exception as error:
                self.plugins[info.name] = _failed(info, f"kpi_engine_adapters raised {type(error).__name__}: {error}")
                continue
            for cls in classes:
                problem = _adapter_problem(cls)
                if problem is None and cls.name in found:
                    problem = f"adapter name '{cls.name}' is already registered by {found[cls.name].plugin.name}"
                if problem:
                    self.plugins[info.name] = _failed(info, problem)
                    continue
                found[cls.name] = AdapterInfo(cls, info)
        self._adapters = found
        return found

    def adapter(self, name: str) -> type[Adapter]:
        adapters = self.adapters()
        if name not in adapters:
            broken = [p for p in self.plugins.values() if p.error]
            note = "".join(f" Plugin '{p.name}' failed: {p.error}." for p in broken)
            hint = did_you_mean(name, adapters) or "No adapter is registered."
            raise PluginError(f"no adapter named '{name}' is installed.{note}", None,
                              f"{hint} Install the plugin that provides it; 'kpi-engine plugins' lists what is installed.")
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
