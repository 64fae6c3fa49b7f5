"""Builds kpi_engine/testing/expected.json, the conformance kit's reference values, from the
independent plain-Python reference (tests/reference_library.py) run on the kit's fixture rows.

    python tests/conformance_expected.py      # rewrite the file after the fixture or a reading changes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402
import reference_library  # noqa: E402

TARGET = Path(__file__).resolve().parent.parent / "kpi_engine" / "testing" / "expected.json"


def build() -> str:
    from kpi_engine.testing import fixture_dir

    data = reference.load(fixture_dir())
    result = {}
    for grouping, by_channel in (("month_channel", True), ("month", False)):
        keys = set()  # every key any KPI has rows for: what one query for the whole library returns
        for name in reference_library.KPIS:
            keys |= set(reference_library.compute(data, name, by_channel))
        result[grouping] = {}
        for name in sorted(reference_library.KPIS):
            own = reference_library.compute(data, name, by_channel)  # the KPI's own rows
            # on the keys of the other KPIs its cell is empty (docs/semantics.md, row sets)
            result[grouping][name] = {"|".join("" if part is None else str(part) for part in key): own.get(key)
                                      for key in sorted(keys, key=str)}
    return json.dumps(result, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(build())
    print(f"wrote {TARGET}")
