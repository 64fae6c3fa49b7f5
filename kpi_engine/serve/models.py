"""The shapes of HTTP requests and answers; they make up the OpenAPI description.

The bounds here are static and generous; the server's configured limits (rows, KPIs per
request, text length) are checked by ``service.py``, the same for every door.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from ..calendar import GRAINS
from ..errors import KpiEngineError, ProjectInvalid
from ..output import _json_value

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
Order = Annotated[str, StringConstraints(pattern=r"^-?[A-Za-z_][A-Za-z0-9_]*$", max_length=201)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


def _iso_day(value: Any) -> Any:
    """YYYY-MM-DD only: pydantic alone would also take a number of seconds since 1970."""
    if isinstance(value, dt.date) or (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
        return value
    raise ValueError("write dates as YYYY-MM-DD")


Day = Annotated[dt.date, BeforeValidator(_iso_day)]
FORMATS = ("json", "csv", "arrow")


class QueryRequest(BaseModel):
    """What to compute: the same as ``kpi-engine evaluate``'s options."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"kpis": ["cost_per_lead", "new_contacts"], "by": ["channel"], "grain": "month",
         "from": "2025-01-01", "to": "2025-07-01"}]})

    kpis: list[Name] = Field(default_factory=list, max_length=100, description="KPI names.")
    formulas: list[Text] = Field(default_factory=list, max_length=100,
                                 description="Ad-hoc formulas, e.g. 'sum(ad_spend.spend) / count(leads)'; "
                                             "output as formula, formula_2, ...")
    by: list[Name] = Field(default_factory=list, max_length=20, description="Dimensions to group by.")
    grain: Optional[Name] = Field(None, description="Time bucket: " + ", ".join(GRAINS) + ", or a granularity "
                                  "of the project (GET /v1/info lists them); without it, one total for the range.")
    start: Optional[Day] = Field(None, alias="from", description="First day, inclusive (YYYY-MM-DD).")
    end: Optional[Day] = Field(None, alias="to", description="End day, exclusive (YYYY-MM-DD).")
    where: Optional[Text] = Field(None, description="Filter on dimensions: \"channel in ('ppc', 'email')\".")
    having: Optional[Text] = Field(None, description="Filter on KPI values: 'cost_per_lead > 100'.")
    order: list[Order] = Field(default_factory=list, max_length=20,
                               description="Output columns to sort by; '-' in front for descending.")
    limit: Optional[int] = Field(None, ge=0, le=2**31 - 1, description="At most this many rows.")
    fill: bool = Field(False, description="Every period of from..to for every dimension value (needs grain, "
                                          "from and to).")
    complete_only: bool = Field(False, description="Only complete periods (inside the range and every source's data).")
    rollups: bool = Field(True, description="false: read the raw rows even where a materialized rollup could answer "
                                            "(docs/rollups.md).")
    format: Optional[Literal[FORMATS]] = Field(None, description="json (default), csv or arrow (Arrow IPC "  # type: ignore[valid-type]
                                                                  "stream); or send an Accept header.")

    def evaluate_options(self) -> dict[str, Any]:
        """The keyword arguments of ``KpiProject.evaluate`` (after the KPI names) for this request."""
        return dict(by=list(self.by), grain=self.grain, start=self.start, end=self.end, where=self.where,
                    having=self.having, order_by=list(self.order), limit=self.limit, formulas=list(self.formulas),
                    fill=self.fill, complete_only=self.complete_only, rollups=self.rollups)


class Column(BaseModel):
    name: str
    role: Literal["time", "dimension", "kpi", "flag"]
    unit: Optional[str] = None
    label: Optional[str] = None
    format: Optional[str] = None


class QueryResponse(BaseModel):
    columns: list[Column] = Field(description="One per row key: period, dimensions, KPIs, and last 'complete', "
                                              "true when the row's period is complete.")
    rows: list[dict[str, Any]]
    row_count: int
    sql: str = Field(description="The SQL that was run.")
    cached: bool = Field(description="True when the answer came from the cache (or a concurrent identical request).")
    cache: Literal["hit", "miss", "shared"]
    cache_age_seconds: float


class Problem(BaseModel):
    message: str
    location: Optional[str] = None
    hint: Optional[str] = None
    detail: Optional[str] = None


class ErrorBody(Problem):
    problems: list[Problem] = Field(default_factory=list, description="Each problem, when there are several.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class KpiSummary(BaseModel):
    name: str
    label: Optional[str] = None
    description: Optional[str] = None
    unit: str
    format: Optional[str] = None
    formula: str
    dimensions: list[str]
    grains: list[str]
    needs_grain: bool = Field(description="True when the KPI compares periods and needs a grain.")
    target: Optional[dict[str, Any]] = None
    owner: Optional[str] = None
    tags: list[str] = Field(default_factory=list)


class KpiList(BaseModel):
    project: str
    kpis: list[KpiSummary]


class KpiExplanation(KpiSummary):
    sources: list[str]
    uses: list[str] = Field(description="KPIs this one is built from.")
    explanation: str = Field(description="The KPI in words, as 'kpi-engine explain' prints it.")
    sql: Optional[str] = Field(None, description="Its SQL by month.")


class DimensionInfo(BaseModel):
    name: str
    label: Optional[str] = None
    description: Optional[str] = None
    kpis: list[str] = Field(description="KPIs that can be sliced by it.")


class DimensionList(BaseModel):
    dimensions: list[DimensionInfo]


def error_content(error: KpiEngineError) -> dict[str, Any]:
    """The JSON body of an error: the same message, location and hint as the command line."""
    def problem(item: KpiEngineError) -> dict[str, Any]:
        return {"message": item.message, "location": str(item.location) if item.location else None,
                "hint": item.hint, "detail": item.detail}

    items = error.errors if isinstance(error, ProjectInvalid) else []
    return {"error": {**problem(error), "problems": [problem(item) for item in items]}}


def answer_body(answer) -> dict[str, Any]:
    """The JSON body of an answer (``service.Answer``): columns, rows, SQL and cache status."""
    result = answer.result
    return {"columns": [{"name": c.name, "role": c.role, "unit": c.unit, "label": c.label, "format": c.format}
                        for c in result.columns],
            "rows": [{c.name: _json_value(row[c.name], c) for c in result.columns} for row in result.to_dicts()],
            "row_count": len(result.rows), "sql": result.sql, "cached": answer.cached, "cache": answer.cache,
            "cache_age_seconds": round(answer.age, 3)}
