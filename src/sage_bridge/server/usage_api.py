"""GET /admin/usage: spend and tokens from the ledger, grouped by route, deployment, client or day."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sage_bridge.accounting.cost import format_usd
from sage_bridge.accounting.windows import load_zone, parse_duration
from sage_bridge.errors import InvalidRequest
from sage_bridge.server.keys import RUNTIME

GROUPS = ("route", "deployment", "provider", "client", "day")
DEFAULT_RANGE = timedelta(days=7)


async def usage(request: web.Request) -> web.Response:
    query = request.query
    group_by = query.get("group_by", "route")
    if group_by not in GROUPS:
        raise InvalidRequest(f'group_by "{group_by}" is not valid; use one of {", ".join(GROUPS)}', param="group_by")
    timezone = query.get("timezone", "UTC")
    try:
        load_zone(timezone)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="timezone") from None
    end = _instant(query.get("until"), "until") or datetime.now(UTC)
    start = _instant(query.get("since"), "since") or end - DEFAULT_RANGE
    lines = await request.app[RUNTIME].registries.ledger.usage_report(group_by, start, end, timezone)  # type: ignore[arg-type]
    return web.json_response({
        "group_by": group_by,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "timezone": timezone,
        "lines": [_line(asdict(line)) for line in lines],
    })


def _instant(text: str | None, name: str) -> datetime | None:
    """Parse an ISO date or time, or a duration back from now such as "24h" or "7d"."""
    if not text:
        return None
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f'{name} "{text}" is neither an ISO date or time (2026-12-01, 2026-12-01T09:00+01:00) nor a duration (24h, 7d)',
            param=name,
        ) from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _line(line: dict[str, Any]) -> dict[str, Any]:
    line["cost_usd"] = format_usd(line["cost_usd"])
    return line
