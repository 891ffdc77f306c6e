"""Plain-text rendering of the daemon's status for bridgectl."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def render_status(data: dict[str, Any]) -> str:
    uptime = int(data["uptime_seconds"])
    lines = [
        f"bridged is {data['state']} (pid {data['pid']}, up {uptime // 3600}h{uptime % 3600 // 60:02d}m{uptime % 60:02d}s)",
        f"socket:  {data['socket']}",
        f"config:  {data['config']['path']} (sha256 {data['config']['sha256'][:12]})",
        f"in flight: {data['in_flight']}",
        "",
        "Routes",
        _table(
            ["ROUTE", "STRATEGY", "TARGETS"],
            [[route["name"], route["strategy"], " -> ".join(route["targets"])] for route in data["routes"]],
        ),
        "",
        "Deployments",
        _table(
            ["DEPLOYMENT", "PROVIDER", "MODEL", "STATE"],
            [
                [d["name"], f"{d['provider']} ({d['type']})", d["model"], d["state"] + (f": {d['disabled_reason']}" if d["disabled_reason"] else "")]
                for d in data["deployments"]
            ],
        ),
    ]
    return "\n".join(lines)
