"""Describe routes as trees of their targets, nested routes included, for `bridgectl graph`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sage_bridge.graph.model import RoutingGraph

Node = dict[str, Any]


def describe_routes(graph: RoutingGraph, live_states: Mapping[str, str] | None = None) -> list[Node]:
    """Return one tree per route. `live_states` maps deployment names to run-time states such
    as "cooling_down"; without it a deployment is "enabled" or "disabled"."""
    return [
        {
            "name": name,
            "strategy": route.strategy,
            "targets": _targets(graph, name, live_states or {}, (name,)),
            "terminal": _deployment_node(graph, route.terminal.name, live_states or {}) if route.terminal else None,
            "plan": [target.deployment.name for target in route.enabled_targets()],
        }
        for name, route in graph.routes.items()
    ]


def _targets(graph: RoutingGraph, route: str, live_states: Mapping[str, str], stack: tuple[str, ...]) -> list[Node]:
    nodes = []
    for entry in graph.loaded.config.routes[route].targets:
        name, weight = entry.target, entry.weight
        node: Node
        if name in graph.routes and name not in stack:
            node = {"name": name, "kind": "route", "strategy": graph.routes[name].strategy,
                    "targets": _targets(graph, name, live_states, (*stack, name))}
        else:
            node = _deployment_node(graph, name, live_states)
        node["weight"] = weight
        nodes.append(node)
    return nodes


def _deployment_node(graph: RoutingGraph, name: str, live_states: Mapping[str, str]) -> Node:
    deployment = graph.deployments[name]
    state = "disabled" if not deployment.enabled else live_states.get(name, "enabled")
    return {
        "name": name,
        "kind": "deployment",
        "provider": deployment.provider,
        "model": deployment.upstream_model,
        "state": state,
        "reason": deployment.disabled_reason,
    }


def render_tree(routes: list[Node]) -> str:
    """Render route trees as indented text."""
    lines: list[str] = []
    for route in routes:
        lines.append(f"{route['name']} ({route['strategy']})")
        children = list(route["targets"])
        if route["terminal"] is not None and all(c["name"] != route["terminal"]["name"] for c in children):
            children.append({**route["terminal"], "terminal": True})
        _render_children(children, "", lines)
    return "\n".join(lines)


def _render_children(children: list[Node], prefix: str, lines: list[str]) -> None:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        branch = "└── " if last else "├── "
        lines.append(prefix + branch + _label(child))
        if child["kind"] == "route":
            _render_children(child["targets"], prefix + ("    " if last else "│   "), lines)


def _label(node: Node) -> str:
    weight = f" weight {node['weight']:g}" if node.get("weight", 1.0) != 1.0 else ""
    if node["kind"] == "route":
        return f"route {node['name']} ({node['strategy']}){weight}"
    terminal = " [terminal]" if node.get("terminal") else ""
    reason = f": {node['reason']}" if node.get("reason") else ""
    return f"{node['name']} -> {node['provider']}/{node['model']} [{node['state']}{reason}]{weight}{terminal}"


def render_dot(routes: list[Node]) -> str:
    """Render route trees in Graphviz dot."""
    lines = ["digraph routes {", "  rankdir=LR;"]
    for route in routes:
        lines.append(f'  "route:{route["name"]}" [shape=box];')
        children = list(route["targets"]) + ([route["terminal"]] if route["terminal"] else [])
        _dot_edges(f'route:{route["name"]}', children, lines)
    lines.append("}")
    return "\n".join(dict.fromkeys(lines))  # one line per node and edge, first occurrence kept


def _dot_edges(parent: str, children: list[Node], lines: list[str]) -> None:
    for child in children:
        if child["kind"] == "route":
            node = f"route:{child['name']}"
            lines.append(f'  "{node}" [shape=box];')
            lines.append(f'  "{parent}" -> "{node}";')
            _dot_edges(node, child["targets"], lines)
        else:
            style = "dashed" if child["state"] != "enabled" else "solid"
            lines.append(f'  "{child["name"]}" [style={style}];')
            lines.append(f'  "{parent}" -> "{child["name"]}";')
