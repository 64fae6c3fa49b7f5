"""KPI targets: evaluate the KPIs that carry a min/max for the latest complete period."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .errors import QueryError
from .freshness import latest_complete


def _describe(target: dict) -> str:
    parts = []
    if "min" in target:
        parts.append(f">= {target['min']:g}")
    if "max" in target:
        parts.append(f"<= {target['max']:g}")
    return " and ".join(parts)


def check_targets(project, names: list[str], grain: str, as_of: dt.date | None, by: tuple[str, ...] = (),
                  today: dt.date | None = None) -> dict[str, Any]:
    """One query for every KPI with a min or max target (or the ones named), for the latest
    complete ``grain`` period of the data (or the last one that ended before ``as_of``).
    Returns a report for humans and schedulers; ``healthy`` is False when a KPI has no value
    there or a source is stale (freshness.py)."""
    model = project.model()
    candidates = names or [n for n, k in model.kpis.items()
                           if k.spec.target and {"min", "max"} & set(k.spec.target) and not k.unavailable]
    checked = [n for n in candidates if model.kpi(n).spec.target and {"min", "max"} & set(model.kpi(n).spec.target)]
    if names and len(checked) < len(names):
        missing = sorted(set(names) - set(checked))
        raise QueryError(f"no min/max target on: {', '.join(missing)}.", None,
                         "Add 'target: {min: ...}' or 'target: {max: ...}' to the KPI, or leave it out.")
    sources = [source for name in checked for source in sorted(model.kpi(name).sources)]
    period = latest_complete(project, sources, grain, as_of, today)
    results = []
    if checked:
        rows = [{}]
        if period.start is not None:
            rows = project.evaluate(checked, by=list(by), grain=grain, start=period.start, end=period.end).to_dicts()
        for row in rows or [{}]:
            for name in checked:
                target = model.kpi(name).spec.target
                value = row.get(name)
                gap = 0.0
                if value is not None and "min" in target and value < target["min"]:
                    gap = target["min"] - value
                if value is not None and "max" in target and value > target["max"]:
                    gap = value - target["max"]
                status = "no data" if value is None else ("breached" if gap > 0 else "ok")
                results.append({"kpi": name, "dimensions": {d: row.get(d) for d in by}, "value": value,
                                "unit": model.kpi(name).spec.unit, "format": model.kpi(name).spec.format,
                                "target": _describe(target), "status": status, "gap": gap})
    no_data = sum(r["status"] == "no data" for r in results)
    return {"period": period.start.isoformat() if period.start else None, "grain": grain, "basis": period.basis,
            "as_of": as_of.isoformat() if as_of else None, "stale": list(period.stale), "results": results,
            "breached": sum(r["status"] == "breached" for r in results),
            "ok": sum(r["status"] == "ok" for r in results), "no_data": no_data,
            "healthy": not period.stale and not no_data and period.start is not None}
