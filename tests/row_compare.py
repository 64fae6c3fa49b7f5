"""Rows of two runs of a query compared as an analyst would: floats within 1e-9 relative (sums
of decimals add up in any order), everything else exactly."""

from __future__ import annotations

import math


def same_rows(left: list[tuple], right: list[tuple]) -> bool:
    def close(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        return a == b
    return len(left) == len(right) and all(len(a) == len(b) and all(map(close, a, b)) for a, b in zip(left, right))
