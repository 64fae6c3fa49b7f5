"""Query results: rows plus what each column is (time, dimension or KPI, and its unit)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from .compiler import OutputColumn


@dataclass(frozen=True)
class Result:
    columns: tuple[OutputColumn, ...]
    rows: list[tuple]
    sql: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_dicts())

    def to_dicts(self) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, (_plain(v) for v in row))) for row in self.rows]

    def to_pandas(self):
        """A pandas DataFrame (needs the ``pandas`` extra)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            from .errors import UsageError

            raise UsageError("pandas is not installed.", None, "pip install 'kpi-engine[pandas]'") from None
        return pd.DataFrame(self.to_dicts(), columns=self.names)

    def to_arrow(self):
        """A pyarrow Table (needs the ``pandas`` extra, which brings pyarrow)."""
        try:
            import pyarrow as pa
        except ImportError:  # pragma: no cover - depends on the environment
            from .errors import UsageError

            raise UsageError("pyarrow is not installed.", None, "pip install 'kpi-engine[pandas]'") from None
        return pa.Table.from_pylist(self.to_dicts())


def _plain(value: Any) -> Any:
    """Warehouse values as plain Python: Decimal -> float, datetime at midnight -> date."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date()
    return value
