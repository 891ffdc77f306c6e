"""Compile a validated config into an immutable routing graph.

Every name is resolved, nested routes are flattened, cycles and unknown names are rejected with
the file, line and key path, and a deployment whose provider has no key is disabled with a
warning so the default config runs on a machine with no keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
import hashlib
import json
from pathlib import Path
from typing import Any

from sage_bridge.accounting.pricing import LOCAL_PROVIDER_TYPES, resolve_price
from sage_bridge.accounting.spend import parse_scope
from sage_bridge.accounting.windows import window_for
from sage_bridge.config.loader import LoadedConfig
from sage_bridge.config.schema import DeploymentConfig, RetryPolicyConfig, RouteConfig
from sage_bridge.config.yaml_source import KeyPath
from sage_bridge.errors import ConfigError
from sage_bridge.graph.model import Deployment, Route, RoutingGraph, Target

NO_KEY = "none"  # api_key value for servers that need no key


class _Problems:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: KeyPath, message: str) -> None:
        self.errors.append(f"{self.loaded.where(path)}: {message}")

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(f"{self.loaded.where(path)}: {message}")


def compile_graph(loaded: LoadedConfig) -> RoutingGraph:
    """Build the routing graph for `loaded`; raise ConfigError listing every problem found."""
    problems = _Problems(loaded)
    deployments = _compile_deployments(loaded, problems)
    terminal = _compile_terminal(loaded, deployments, problems)
    routes = {
        name: _compile_route(name, route, loaded, deployments, terminal, problems)
        for name, route in loaded.config.routes.items()
    }
    for name in routes:
        if name in deployments:
            problems.error(("routes", name), f'route "{name}" has the same name as a deployment; rename one')
    _check_budgets(loaded, deployments, problems)
    if problems.errors:
        raise ConfigError(problems.errors)
    return RoutingGraph(routes, deployments, terminal, loaded, tuple(problems.warnings))


def _compile_deployments(loaded: LoadedConfig, problems: _Problems) -> dict[str, Deployment]:
    config = loaded.config
    deployments: dict[str, Deployment] = {}
    for name, deployment in config.models.items():
        path: KeyPath = ("models", name)
        provider = config.providers.get(deployment.provider)
        if provider is None:
            problems.error((*path, "provider"), _unknown("provider", deployment.provider, config.providers))
            continue
        local = provider.type in LOCAL_PROVIDER_TYPES
        upstream_model = _upstream_model(name, deployment, local, problems, path)
        if upstream_model is None:
            continue
        disabled = _disabled_reason(deployment, provider, problems, path)
        price = resolve_price(deployment, provider.type, upstream_model, config.pricing)
        if price is None and not local:
            problems.warn(path, f'no price for upstream model "{upstream_model}"; its cost is recorded as unknown')
        provider_identity = _digest(provider.model_dump(mode="json", exclude={"api_key"}), _key_digest(provider))
        deployments[name] = Deployment(
            name=name,
            provider=deployment.provider,
            provider_type=provider.type,
            upstream_model=upstream_model,
            config=deployment,
            price=price,
            remote=not local,
            identity=_digest(deployment.model_dump(mode="json"), provider_identity),
            provider_identity=provider_identity,
            disabled_reason=disabled,
        )
    return deployments


def _upstream_model(
    name: str, deployment: DeploymentConfig, local: bool, problems: _Problems, path: KeyPath
) -> str | None:
    if local:
        if deployment.path is None:
            problems.error((*path, "path"), "a llama_cpp deployment needs path: (a GGUF file or pkg:PACKAGE/FILE)")
            return None
        return deployment.model or Path(deployment.path.removeprefix("pkg:")).stem
    if deployment.path is not None:
        problems.error((*path, "path"), "path: applies only to llama_cpp deployments; remove it")
    if deployment.model is None:
        problems.error((*path, "model"), f'deployment "{name}" needs model: (the provider\'s model name)')
        return None
    return deployment.model


def _disabled_reason(deployment: DeploymentConfig, provider: Any, problems: _Problems, path: KeyPath) -> str | None:
    if not deployment.enabled:
        return "disabled in bridge.yaml (enabled: false)"
    key = getattr(provider, "api_key", NO_KEY)
    key_text = key.get_secret_value() if key is not None and not isinstance(key, str) else key
    if key_text:
        return None
    variables = problems.loaded.positions.env_names.get(("providers", deployment.provider, "api_key"))
    fix = f"set {' or '.join(variables)}" if variables else f"set providers.{deployment.provider}.api_key"
    reason = f'provider "{deployment.provider}" has no api_key; {fix} to enable it'
    problems.warn(path, f"deployment disabled: {reason}")
    return reason


def _compile_terminal(
    loaded: LoadedConfig, deployments: dict[str, Deployment], problems: _Problems
) -> Deployment | None:
    name = loaded.config.terminal
    if name is None:
        return None
    terminal = deployments.get(name)
    if terminal is None:
        problems.error(("terminal",), _unknown("deployment", name, loaded.config.models))
    elif terminal.remote:
        problems.warn(("terminal",), f'terminal "{name}" is not a local model, so it can fail like any target')
    return terminal


def _compile_route(
    name: str,
    route: RouteConfig,
    loaded: LoadedConfig,
    deployments: dict[str, Deployment],
    terminal: Deployment | None,
    problems: _Problems,
) -> Route:
    targets: list[Target] = []
    _flatten(name, route, loaded, deployments, problems, targets, (name,), 1.0)
    route_terminal = _route_terminal(name, route, deployments, terminal, problems)
    if route_terminal is not None and all(t.deployment.name != route_terminal.name for t in targets):
        targets.append(Target(route_terminal))
    return Route(name, route.strategy, tuple(targets), _retry_policy(name, route, loaded, problems), route_terminal)


def _flatten(
    name: str,
    route: RouteConfig,
    loaded: LoadedConfig,
    deployments: dict[str, Deployment],
    problems: _Problems,
    out: list[Target],
    stack: tuple[str, ...],
    scale: float,
) -> None:
    routes = loaded.config.routes
    for index, entry in enumerate(route.targets):
        target_name, weight = entry.target, entry.weight
        path: KeyPath = ("routes", name, "targets", index)
        if target_name in deployments:
            if all(t.deployment.name != target_name for t in out):
                out.append(Target(deployments[target_name], weight * scale))
        elif target_name in routes:
            if target_name in stack:
                cycle = " -> ".join((*stack[stack.index(target_name):], target_name))
                problems.error(path, f"routes form a cycle: {cycle}; remove one of these targets")
                continue
            _flatten(target_name, routes[target_name], loaded, deployments, problems, out, (*stack, target_name), weight * scale)
        elif target_name not in loaded.config.models:
            problems.error(path, _unknown("deployment or route", target_name, {**deployments, **routes}))


def _route_terminal(
    name: str, route: RouteConfig, deployments: dict[str, Deployment], terminal: Deployment | None, problems: _Problems
) -> Deployment | None:
    if route.terminal is None:
        return terminal
    if route.terminal == "none":
        return None
    chosen = deployments.get(route.terminal)
    if chosen is None:
        problems.error(("routes", name, "terminal"), _unknown("deployment", route.terminal, deployments))
    return chosen


def _retry_policy(name: str, route: RouteConfig, loaded: LoadedConfig, problems: _Problems) -> RetryPolicyConfig:
    if route.retry is None:
        return loaded.config.retry_policies.get("standard", RetryPolicyConfig())
    policy = loaded.config.retry_policies.get(route.retry)
    if policy is None:
        problems.error(("routes", name, "retry"), _unknown("retry policy", route.retry, loaded.config.retry_policies))
        return RetryPolicyConfig()
    return policy


def _check_budgets(loaded: LoadedConfig, deployments: dict[str, Deployment], problems: _Problems) -> None:
    config = loaded.config
    known: dict[str, Mapping[str, object]] = {"route": config.routes, "deployment": deployments, "provider": config.providers}
    for index, budget in enumerate(config.budgets):
        path: KeyPath = ("budgets", index)
        try:
            window_for(budget)
        except ValueError as exc:
            problems.error(path, str(exc))
        kind, name = parse_scope(budget.scope)
        if name is not None and kind in known and name not in known[kind]:
            problems.error((*path, "scope"), _unknown(kind, name, known[kind]))
        if budget.usd is None and budget.tokens is None:
            problems.error(path, f'budget "{budget.scope}" sets no limit; add usd: or tokens:')
    for name, deployment in deployments.items():
        if config.budgets and deployment.price is None and deployment.enabled and not config.allow_unpriced:
            problems.warn(("models", name), f"deployment {name} has no price, so USD budgets refuse its requests; "
                          "add price: or set allow_unpriced: true")


def _unknown(kind: str, name: str, known: Any) -> str:
    suggestion = difflib.get_close_matches(name, list(known), n=1)
    hint = f' (did you mean "{suggestion[0]}"?)' if suggestion else ""
    return f'unknown {kind} "{name}"{hint}'


def _key_digest(provider: Any) -> str:
    key = getattr(provider, "api_key", None)
    text = key.get_secret_value() if key is not None else ""
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(data: Any, salt: str) -> str:
    payload = json.dumps(data, sort_keys=True, default=str) + salt
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
