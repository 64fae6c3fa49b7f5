"""KPI targets: evaluate the KPIs that carry a min/max for the latest complete period."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .errors import QueryError


def _describe(target: dict) -> str:
    parts = []
    if "min" in target:
        parts.append(f">= {target['min']:g}")
    if "max" in target:
        parts.append(f"<= {target['max']:g}")
    return " and ".join(parts)


def check_targets(project, names: list[str], grain: str, as_of: dt.date, by: tuple[str, ...] = ()) -> dict[str, Any]:
    """One query for every KPI with a min or max target (or the ones named), for the last
    ``grain`` period that ended before ``as_of``. Returns a report for humans and schedulers."""
    model = project.model()
    calendar = project.project.config.calendar
    candidates = names or [n for n, k in model.kpis.items()
                           if k.spec.target and {"min", "max"} & set(k.spec.target) and not k.unavailable]
    checked = [n for n in candidates if model.kpi(n).spec.target and {"min", "max"} & set(model.kpi(n).spec.target)]
    if names and len(checked) < len(names):
        missing = sorted(set(names) - set(checked))
        raise QueryError(f"no min/max target on: {', '.join(missing)}.", None,
                         "Add 'target: {min: ...}' or 'target: {max: ...}' to the KPI, or leave it out.")
    end = calendar.period_start(as_of, grain)  # the current, incomplete period starts here
    start = calendar.shift(end, grain, -1)
    results = []
    if checked:
        rows = project.evaluate(checked, by=list(by), grain=grain, start=start, end=end).to_dicts() or [{}]
        for row in rows:
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
                                "target": _describe(target), "status": status, "gap": gap})
    return {"period": start.isoformat(), "grain": grain, "as_of": as_of.isoformat(), "results": results,
            "breached": sum(r["status"] == "breached" for r in results),
            "ok": sum(r["status"] == "ok" for r in results),
            "no_data": sum(r["status"] == "no data" for r in results)}
