"""Draw median latency and throughput against concurrency for every server in the JSON sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must be chosen before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402

_STYLES = {
    "bridge (full)": ("tab:red", "o"),
    "bridge (plain)": ("tab:orange", "s"),
    "bare aiohttp proxy": ("tab:blue", "^"),
    "LiteLLM proxy": ("tab:purple", "D"),
    "direct to mock": ("tab:gray", "x"),
}


def plot_sweep(sweep: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Write a PNG with p50 latency (p99 dashed) and throughput against concurrency."""
    figure, (latency_axis, rps_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in sweep.items():
        color, marker = _STYLES.get(name, ("black", "."))
        concurrencies = sorted(int(c) for c in points)
        medians = [points[str(c)]["median"] for c in concurrencies]
        latency_axis.plot(concurrencies, [m["p50"] for m in medians], color=color, marker=marker, label=f"{name} p50")
        latency_axis.plot(concurrencies, [m["p99"] for m in medians], color=color, linestyle="--", alpha=0.5)
        rps_axis.plot(concurrencies, [m["rps"] for m in medians], color=color, marker=marker, label=name)

    ticks = sorted({int(c) for points in sweep.values() for c in points})
    for axis in (latency_axis, rps_axis):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(tick) for tick in ticks])
        axis.set_yscale("log")
        axis.set_xlabel("concurrency (requests in flight)")
        axis.grid(True, which="both", alpha=0.3)
    latency_axis.set_ylabel("latency, ms (solid p50, dashed p99)")
    rps_axis.set_ylabel("requests per second")
    latency_axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
