"""The routing graph: the immutable result of compiling a validated config.

A request reads one graph snapshot from start to end; a reload swaps in a new one. Nothing here
holds run-time state: limiter buckets, cooldowns, budget spend and provider clients live in
registries keyed by `Deployment.identity`, so they survive a reload of an unchanged deployment.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sage_bridge.config.loader import LoadedConfig
from sage_bridge.config.schema import DeploymentConfig, PriceConfig, RetryPolicyConfig
from sage_bridge.errors import ModelNotFound

_LISTED_NAMES = 10  # names an unknown-model error lists before it cuts the list short

Strategy = Literal["fallback", "weighted", "cheapest", "fastest"]


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    provider: str  # the provider's name in bridge.yaml
    provider_type: str
    upstream_model: str
    config: DeploymentConfig
    price: PriceConfig | None  # the inline price, else the catalogue's, else None (unpriced)
    remote: bool  # False for local models, which no USD budget blocks
    identity: str  # stable digest of the provider's and the deployment's config
    provider_identity: str  # stable digest of the provider's config alone
    disabled_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    @property
    def context(self) -> int | None:
        return self.config.context


@dataclass(frozen=True, slots=True)
class Target:
    deployment: Deployment
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    strategy: Strategy
    # Nested routes are flattened, each deployment appears once, and the terminal (if any)
    # is last. Disabled deployments are kept so `bridgectl graph` can show why.
    targets: tuple[Target, ...]
    retry: RetryPolicyConfig
    terminal: Deployment | None
    _enabled: tuple[Target, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: every request asks for it, and a route never changes after compiling.
        object.__setattr__(self, "_enabled", tuple(t for t in self.targets if t.deployment.enabled))

    def enabled_targets(self) -> tuple[Target, ...]:
        return self._enabled


@dataclass(frozen=True, slots=True)
class RoutingGraph:
    routes: Mapping[str, Route]
    deployments: Mapping[str, Deployment]
    terminal: Deployment | None
    loaded: LoadedConfig
    warnings: tuple[str, ...] = field(default=())

    def resolve(self, model: str) -> Route:
        """Return the route for a request's `model`; a deployment name is a one-target route."""
        route = self.routes.get(model)
        if route is not None:
            return route
        deployment = self.deployments.get(model)
        if deployment is not None:
            return Route(model, "fallback", (Target(deployment),), RetryPolicyConfig(), None)
        names = [*self.routes, *(name for name, d in self.deployments.items() if d.enabled)]
        close = difflib.get_close_matches(model, names, n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        listed = ", ".join(names[:_LISTED_NAMES]) + (", ..." if len(names) > _LISTED_NAMES else "")
        raise ModelNotFound(
            f'model "{model}" is not a route or deployment of this bridge; {hint}'
            f"it serves: {listed} (GET /v1/models lists them all)",
            param="model",
        )
