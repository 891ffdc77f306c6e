"""Compare two routing graphs: which routes and deployments a reload adds, removes or changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sage_bridge.graph.model import Deployment, Route, RoutingGraph

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NameChanges:
    """Names present only in the new graph, only in the old one, and in both but different."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class GraphDiff:
    routes: NameChanges = NameChanges()
    deployments: NameChanges = NameChanges()

    def __bool__(self) -> bool:
        return bool(self.routes or self.deployments)

    def to_json(self) -> dict[str, Any]:
        """Return `{"added": {"routes": [...], "deployments": [...]}, "removed": ..., "changed": ...}`."""
        return {
            kind: {"routes": list(getattr(self.routes, kind)), "deployments": list(getattr(self.deployments, kind))}
            for kind in ("added", "removed", "changed")
        }

    def summary(self) -> str:
        """Return a one-line description such as "routes added: fast; deployments changed: smollm2"."""
        parts = []
        for label, changes in (("routes", self.routes), ("deployments", self.deployments)):
            for kind in ("added", "removed", "changed"):
                names = getattr(changes, kind)
                if names:
                    parts.append(f"{label} {kind}: {', '.join(names)}")
        return "; ".join(parts) or "no route or deployment changed"


def diff_graphs(old: RoutingGraph, new: RoutingGraph) -> GraphDiff:
    """Return what changes when `new` replaces `old`."""
    return GraphDiff(
        routes=_compare(old.routes, new.routes, _route_signature),
        deployments=_compare(old.deployments, new.deployments, _deployment_signature),
    )


def _compare(old: Mapping[str, T], new: Mapping[str, T], signature: Callable[[T], object]) -> NameChanges:
    added = tuple(name for name in new if name not in old)
    removed = tuple(name for name in old if name not in new)
    changed = tuple(name for name in new if name in old and signature(old[name]) != signature(new[name]))
    return NameChanges(added, removed, changed)


def _route_signature(route: Route) -> object:
    # Deployments are compared by name here: a changed deployment is reported under deployments,
    # not again under every route that targets it.
    targets = tuple((target.deployment.name, target.weight) for target in route.targets)
    terminal = route.terminal.name if route.terminal else None
    return (route.strategy, targets, route.retry, terminal)


def _deployment_signature(deployment: Deployment) -> object:
    # The identity digests the deployment's and its provider's config (key included) but not a
    # price taken from the catalogue in policies/pricing.yaml, so the resolved price is compared too.
    return (deployment.identity, deployment.price)
