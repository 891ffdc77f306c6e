"""`bridgectl usage`: spend and tokens from the ledger as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any
from urllib.parse import urlencode

from sage_bridge.cli.client import BridgeClient

COLUMNS = ["key", "requests", "ok", "errors", "rejected", "cancelled", "prompt_tokens", "completion_tokens",
           "cached_tokens", "cost_usd", "unknown_cost_requests", "estimated_requests"]


def add_parser(commands: Any) -> None:
    usage = commands.add_parser("usage", help="report spend and tokens grouped by route, deployment, client or day")
    usage.add_argument("--by", default="route", choices=["route", "deployment", "provider", "client", "day"],
                       help="what to group by (default: route)")
    usage.add_argument("--since", default="7d", help="start: an ISO date or time, or a duration back from now such as 24h (default: 7d)")
    usage.add_argument("--until", help="end: an ISO date or time (default: now)")
    usage.add_argument("--timezone", default="UTC", help="IANA time zone for --by day (default: UTC)")
    usage.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format (default: table)")


async def usage(client: BridgeClient, args: argparse.Namespace) -> int:
    query = {"group_by": args.by, "since": args.since, "timezone": args.timezone}
    if args.until:
        query["until"] = args.until
    report = await client.get_json("/admin/usage?" + urlencode(query))
    if args.format == "json":
        print(json.dumps(report, indent=2))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[args.by, *COLUMNS[1:]], extrasaction="ignore")
        writer.writeheader()
        for line in report["lines"]:
            writer.writerow({args.by: line["key"] or "", **line})
    else:
        print(_table(report, args.by))
    return 0


def _table(report: dict[str, Any], group: str) -> str:
    headers = [group.upper(), "REQUESTS", "OK", "FAILED", "PROMPT", "COMPLETION", "COST USD"]
    rows = [
        [line["key"] or "-", str(line["requests"]), str(line["ok"]), str(line["errors"] + line["rejected"] + line["cancelled"]),
         str(line["prompt_tokens"]), str(line["completion_tokens"]),
         line["cost_usd"] + (f" (+{line['unknown_cost_requests']} unpriced)" if line["unknown_cost_requests"] else "")]
        for line in report["lines"]
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [f"{report['since']} .. {report['until']} ({report['timezone']})"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)
