"""bridgectl: inspect and talk to a running bridged."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sage_bridge.cli import graph_commands, usage_command
from sage_bridge.cli.client import BridgeClient, DaemonError, DaemonUnreachable
from sage_bridge.cli.render import render_status
from sage_bridge.config.settings import socket_from_environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgectl", description="Inspect and talk to a running bridged.")
    parser.add_argument("--socket", help="the daemon's Unix socket (default: $SAGE_BRIDGE_SOCKET, else the daemon's default)")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="show health, routes and deployments")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    chat = commands.add_parser("chat", help="send one prompt and stream the answer")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("-m", "--model", default="default", help="route or deployment to ask (default: default)")
    chat.add_argument("--max-tokens", type=int, help="cap on generated tokens")
    chat.add_argument("--temperature", type=float, help="sampling temperature, 0 to 2")

    graph_commands.add_parsers(commands)
    usage_command.add_parser(commands)
    return parser


async def _status(client: BridgeClient, args: argparse.Namespace) -> int:
    data = await client.get_json("/admin/status")
    print(json.dumps(data, indent=2) if args.json else render_status(data))
    return 0


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


_COMMANDS: dict[str, Callable[[BridgeClient, argparse.Namespace], Awaitable[int]]] = {
    "status": _status,
    "chat": _chat,
    "check": graph_commands.check,
    "graph": graph_commands.graph,
    "usage": usage_command.usage,
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
