"""Percentiles and medians for benchmark samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile (fraction 0.5 for p50), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float | None]) -> float | None:
    """Return the median of the values that are not None, or None when there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """Return p50, p90, p99, mean and max of the values (milliseconds in, milliseconds out)."""
    return {
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values) if values else None,
        "max": max(values) if values else None,
    }
