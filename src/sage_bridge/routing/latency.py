"""Moving averages of each deployment's latency, for the `fastest` strategy."""

from __future__ import annotations

from dataclasses import dataclass

# Weight of the newest sample: about the last ten requests dominate the average.
SMOOTHING = 0.2


@dataclass(slots=True)
class _Average:
    value: float
    samples: int


class LatencyTracker:
    """Exponentially weighted latency (or time to first token) per deployment name.

    Kept across reloads: a deployment keeps its history while its name stays.
    """

    def __init__(self) -> None:
        self._averages: dict[str, _Average] = {}

    def record(self, deployment: str, seconds: float) -> None:
        average = self._averages.get(deployment)
        if average is None:
            self._averages[deployment] = _Average(seconds, 1)
        else:
            average.value += SMOOTHING * (seconds - average.value)
            average.samples += 1

    def average(self, deployment: str) -> float | None:
        average = self._averages.get(deployment)
        return None if average is None else average.value

    def snapshot(self) -> dict[str, float]:
        return {name: average.value for name, average in sorted(self._averages.items())}
