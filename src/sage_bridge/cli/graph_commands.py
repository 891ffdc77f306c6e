"""`bridgectl check` and `bridgectl graph`: compile a config offline, or show the live graph."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sage_bridge.cli.client import BridgeClient
from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import default_config_path
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.describe import describe_routes, render_dot, render_tree


def add_parsers(commands: Any) -> None:
    check = commands.add_parser("check", help="compile a bridge.yaml offline and list its errors and warnings")
    check.add_argument("file", nargs="?", help="the config to check (default: ./bridge.yaml, else ~/.config/sage-bridge/bridge.yaml)")

    graph = commands.add_parser("graph", help="print each route as a tree of its targets and their state")
    graph.add_argument("--config", help="compile this file offline instead of asking the running daemon")
    output = graph.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the trees as JSON")
    output.add_argument("--dot", action="store_true", help="print the trees as a Graphviz dot graph")


async def check(client: BridgeClient, args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else default_config_path()
    try:
        graph = compile_graph(load_config(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}")
        count = len(exc.problems)
        print(f"{path}: {count} {'error' if count == 1 else 'errors'}", file=sys.stderr)
        return 1
    for warning in graph.warnings:
        print(f"warning: {warning}")
    counts = [_count(len(graph.routes), "route"), _count(len(graph.deployments), "deployment"),
              _count(len(graph.warnings), "warning")]
    print(f"{path}: OK ({', '.join(counts)})")
    return 0


async def graph(client: BridgeClient, args: argparse.Namespace) -> int:
    if args.config:
        try:
            routes = describe_routes(compile_graph(load_config(Path(args.config))))
        except ConfigError as exc:
            print("\n".join(f"error: {problem}" for problem in exc.problems), file=sys.stderr)
            return 1
    else:
        routes = (await client.get_json("/admin/graph"))["routes"]
    if args.json:
        print(json.dumps(routes, indent=2))
    elif args.dot:
        print(render_dot(routes))
    else:
        print(render_tree(routes))
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
