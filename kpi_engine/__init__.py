"""kpi-engine: KPIs defined in YAML, compiled to SQL with sqlglot, run on your warehouse.

The public API (imported lazily so the command line starts fast)::

    from kpi_engine import open_project
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "open_project": "engine", "KpiProject": "engine", "Result": "result", "Request": "compiler",
    "CompiledQuery": "compiler", "KpiEngineError": "errors", "ProjectInvalid": "errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'kpi_engine' has no attribute '{name}'")
