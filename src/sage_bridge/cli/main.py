"""bridgectl: inspect and talk to a running bridged."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from sage_bridge.cli import graph_commands, usage_command
from sage_bridge.cli.client import BridgeClient, DaemonError, DaemonUnreachable
from sage_bridge.cli.render import make_console, status_view, watch_status
from sage_bridge.config.settings import socket_from_environment


SOCKET_HELP = "the daemon's Unix socket (default: $SAGE_BRIDGE_SOCKET, else the daemon's default)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgectl", description="Inspect and talk to a running bridged.")
    parser.add_argument("--socket", help=SOCKET_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="show health, routes, deployments, budgets, limits and cooldowns")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.add_argument("--watch", nargs="?", type=_positive_seconds, const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")

    chat = commands.add_parser("chat", help="send one prompt and stream the answer")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("-m", "--model", default="default", help="route or deployment to ask (default: default)")
    chat.add_argument("--max-tokens", type=int, help="cap on generated tokens")
    chat.add_argument("--temperature", type=float, help="sampling temperature, 0 to 2")

    graph_commands.add_parsers(commands)
    usage_command.add_parser(commands)

    reload = commands.add_parser("reload", help="reload bridge.yaml and its included files; exit 1 if rejected")
    reload.add_argument("--json", action="store_true", help="print the outcome as JSON")

    # --socket also works after the command name; SUPPRESS keeps a value given before it.
    for command in commands.choices.values():
        command.add_argument("--socket", default=argparse.SUPPRESS, help=SOCKET_HELP)
    return parser


async def _status(client: BridgeClient, args: argparse.Namespace) -> int:
    console = make_console()
    if args.watch is not None:
        return await watch_status(lambda: client.get_json("/admin/status"), console, args.watch, args.json)
    data = await client.get_json("/admin/status")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        console.print(status_view(data))
    return 0


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--watch takes a number of seconds, not {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"--watch takes a positive number of seconds, not {text}")
    return seconds


async def _chat(client: BridgeClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"model": args.model, "messages": [{"role": "user", "content": args.prompt}]}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        body["temperature"] = args.temperature
    async for chunk in client.stream_chat(body):
        for choice in chunk.get("choices", []):
            sys.stdout.write(choice.get("delta", {}).get("content") or "")
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


async def _reload(client: BridgeClient, args: argparse.Namespace) -> int:
    report = await _post_json(client, "/admin/reload")
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["outcome"] == "rejected":
        print("reload rejected; bridged keeps serving its previous config:", file=sys.stderr)
        for error in report["errors"]:
            print(f"  {error}", file=sys.stderr)
    else:
        print(_describe_reload(report))
    return 1 if report["outcome"] == "rejected" else 0


def _describe_reload(report: dict[str, Any]) -> str:
    digest = (report["sha256"] or "")[:12]
    if report["outcome"] == "unchanged":
        return (f"config unchanged since the last load (sha256 {digest}); nothing to reload. "
                "The daemon applies saved edits by itself: `bridgectl status` shows the last reload.")
    lines = [f"reload accepted: bridged now serves the config with sha256 {digest}"]
    for kind in ("added", "removed", "changed"):
        for section in ("routes", "deployments"):
            names = report[kind][section]
            if names:
                lines.append(f"  {section} {kind}: {', '.join(names)}")
    if len(lines) == 1:
        lines.append("  no route or deployment changed")
    lines += [f"  warning: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


async def _post_json(client: BridgeClient, path: str) -> Any:
    # NOTE: BridgeClient has only GET helpers, so this POST opens the client's session itself.
    try:
        async with client._session() as session, session.post(f"http://localhost{path}") as response:
            data = await response.json(content_type=None)
    except (aiohttp.ClientConnectorError, FileNotFoundError) as exc:
        raise DaemonUnreachable(client.socket_path) from exc
    if response.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise DaemonError(error.get("message", f"the daemon answered HTTP {response.status}"))
    return data


_COMMANDS: dict[str, Callable[[BridgeClient, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "status": _status,
    "chat": _chat,
    "check": graph_commands.check,
    "graph": graph_commands.graph,
    "usage": usage_command.usage,
    "reload": _reload,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = BridgeClient(socket_from_environment(args.socket))
    try:
        return asyncio.run(_COMMANDS[args.command](client, args))
    except (DaemonUnreachable, DaemonError) as exc:
        print(f"bridgectl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) closed the pipe early; that needs no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
