"""Rendering of the daemon's status for bridgectl: rich tables, coloured only on a terminal.

Tables for budgets, limiters and cooldowns appear when the status JSON has them, so this
module renders the status of any daemon version.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sage_bridge.cli.client import DaemonError, DaemonUnreachable

# Off a terminal nothing is wrapped at 80 columns, so scripts that grep the output see whole names.
PIPE_WIDTH = 200
_STATE_STYLES = {"serving": "green", "reloading": "yellow", "draining": "yellow", "starting": "yellow",
                 "stopped": "red", "enabled": "green", "disabled": "yellow",
                 "closed": "green", "half_open": "yellow", "open": "red"}

Fetch = Callable[[], Awaitable[Any]]
Sleep = Callable[[float], Awaitable[None]]


def make_console(file: IO[str] | None = None) -> Console:
    """Return a console that colours only a terminal and does not wrap piped output."""
    console = Console(file=file, highlight=False)
    if console.is_terminal:
        return console
    return Console(file=file, highlight=False, width=PIPE_WIDTH)


def render_status(data: dict[str, Any], width: int = PIPE_WIDTH) -> str:
    """Return the status as plain text, without colour."""
    console = Console(width=width, color_system=None, highlight=False, record=True, file=io.StringIO())
    console.print(status_view(data))
    return console.export_text().rstrip("\n")


def status_view(data: dict[str, Any]) -> RenderableType:
    """Build the status screen: a header, then one table per section the status JSON has."""
    parts: list[RenderableType] = [_header(data)]
    parts.append(_routes(data.get("routes") or []))
    parts.append(_deployments(data.get("deployments") or []))
    if data.get("budgets"):
        parts.append(_budgets(data["budgets"]))
    limits = data.get("limits") or {}
    if limits.get("deployments") or limits.get("clients"):
        parts.append(_limiters([*limits.get("deployments", []), *limits.get("clients", [])]))
    if data.get("cooldowns"):
        parts.append(_cooldowns(data["cooldowns"]))
    return Group(*parts)


def _header(data: dict[str, Any]) -> Text:
    uptime = int(data.get("uptime_seconds", 0))
    text = Text("bridged is ")
    text.append(str(data.get("state", "unknown")), style=_style(data.get("state")))
    text.append(f" (pid {data.get('pid')}, up {uptime // 3600}h{uptime % 3600 // 60:02d}m{uptime % 60:02d}s)\n")
    text.append(f"socket:    {data.get('socket')}\n")
    config = data.get("config") or {}
    text.append(f"config:    {config.get('path')} (sha256 {str(config.get('sha256', ''))[:12]})\n")
    text.append(f"in flight: {data.get('in_flight')}")
    admission = (data.get("limits") or {}).get("admission")
    if admission:
        cap = admission.get("max_in_flight")
        admitted = f"{admission.get('in_flight')} of {cap}" if cap else f"{admission.get('in_flight')}, no cap"
        text.append(f" (admitted {admitted}, {admission.get('queued')} queued)")
    reload = data.get("reload")
    if isinstance(reload, dict) and reload.get("last_outcome"):
        text.append("\nlast reload: ")
        outcome = str(reload["last_outcome"])
        text.append(outcome, style="red" if outcome == "rejected" else "green")
        for error in reload.get("errors") or []:
            text.append(f"\n  {error}", style="red")
    for warning in config.get("warnings") or []:
        text.append(f"\nwarning: {warning}", style="yellow")
    return text


def _routes(routes: list[dict[str, Any]]) -> Table:
    table = _table("Routes", "ROUTE", "STRATEGY", "TARGETS")
    for route in routes:
        table.add_row(route["name"], route["strategy"], " -> ".join(route["targets"]))
    return table


def _deployments(deployments: list[dict[str, Any]]) -> Table:
    table = _table("Deployments", "DEPLOYMENT", "PROVIDER", "MODEL", "STATE")
    for deployment in deployments:
        state = Text(deployment["state"], style=_style(deployment["state"]))
        if deployment.get("disabled_reason"):
            state.append(f": {deployment['disabled_reason']}")
        table.add_row(deployment["name"], f"{deployment['provider']} ({deployment['type']})", deployment["model"], state)
    return table


def _budgets(budgets: list[dict[str, Any]]) -> Table:
    table = _table("Budgets", "SCOPE", "WINDOW", "SPENT", "RESERVED", "LIMIT", "REMAINING", "TOKENS", "RESETS", "ON EXCEED")
    for budget in budgets:
        remaining = Text(_usd(budget.get("remaining_usd")))
        if budget.get("remaining_usd") is not None and float(budget["remaining_usd"]) <= 0:
            remaining.stylize("red")
        elif budget.get("soft_exceeded"):
            remaining.stylize("yellow")
        table.add_row(
            budget.get("scope", ""), budget.get("window", ""), _usd(budget.get("spent_usd")),
            _usd(budget.get("reserved_usd")), _usd(budget.get("limit_usd")), remaining,
            _of(budget.get("spent_tokens"), budget.get("limit_tokens")), _time(budget.get("resets_at")),
            budget.get("on_exceed", ""),
        )
    return table


def _limiters(limiters: list[dict[str, Any]]) -> Table:
    table = _table("Rate limits", "SCOPE", "NAME", "RPM", "TPM", "IN FLIGHT", "HELD BACK")
    for limiter in limiters:
        held_back = float(limiter.get("held_back_for") or 0)
        table.add_row(
            limiter.get("scope", ""), limiter.get("name", ""),
            _of(limiter.get("rpm_used"), limiter.get("rpm_limit")), _of(limiter.get("tpm_used"), limiter.get("tpm_limit")),
            _of(limiter.get("in_flight"), limiter.get("max_concurrency")),
            Text(f"{held_back:.1f} s", style="yellow") if held_back > 0 else "-",
        )
    return table


def _cooldowns(cooldowns: list[dict[str, Any]]) -> Table:
    table = _table("Cooldowns", "DEPLOYMENT", "STATE", "FAILURES", "COOLS DOWN FOR")
    for cooldown in cooldowns:
        state = str(cooldown.get("state", ""))
        remaining = float(cooldown.get("cooldown_remaining") or 0)
        table.add_row(cooldown.get("deployment", ""), Text(state, style=_style(state)),
                      str(cooldown.get("failures_in_window", 0)), f"{remaining:.1f} s" if remaining > 0 else "-")
    return table


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold",
                  box=None, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _style(state: object) -> str:
    return _STATE_STYLES.get(str(state), "")


def _usd(value: object) -> str:
    # Exact: the status sends money as decimal strings, and small spends are fractions of a cent.
    if value is None:
        return "-"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return f"${format(amount.normalize(), ',f')}"


def _of(used: object, limit: object) -> str:
    used_text = "-" if used is None else f"{float(str(used)):,.0f}"
    return used_text if limit is None else f"{used_text} / {float(str(limit)):,.0f}"


def _time(value: object) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return str(value)


async def watch_status(fetch: Fetch, console: Console, interval: float, as_json: bool = False,
                       sleep: Sleep = asyncio.sleep) -> int:
    """Show the status every `interval` seconds until interrupted; return the exit code, 0.

    On a terminal the screen is redrawn in place. Piped, each refresh is printed after the last
    (one JSON document per line with `as_json`), so a script can read the stream.
    """
    live = Live(console=console, auto_refresh=False) if console.is_terminal and not as_json else None
    try:
        if live is not None:
            live.start()
        while True:
            view = await _snapshot(fetch, as_json)
            if live is not None:
                live.update(view, refresh=True)
            elif as_json:
                console.out(view, highlight=False)
            else:
                console.print(view)
                console.print()
            await sleep(interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    finally:
        if live is not None:
            live.stop()


async def _snapshot(fetch: Fetch, as_json: bool) -> RenderableType:
    try:
        data = await fetch()
    except (DaemonUnreachable, DaemonError) as exc:
        # The daemon may be restarting: show the error and keep watching.
        if as_json:
            return json.dumps({"error": str(exc)})
        return Text(f"{datetime.now():%H:%M:%S} {exc}; retrying", style="red")
    if as_json:
        return json.dumps(data, separators=(",", ":"))
    return status_view(data)
