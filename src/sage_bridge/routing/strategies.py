"""Order a route's targets for one request: fallback, weighted, cheapest or fastest.

The route's terminal, when it has one, always stays last: it is the answer of last resort.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

from sage_bridge.accounting.cost import worst_case_cost
from sage_bridge.graph.model import Route, Target
from sage_bridge.routing.latency import LatencyTracker

# Chance that `fastest` tries the targets in random order, so a deployment that was slow
# (or failed) once gets traffic again and its average can recover.
EXPLORATION = 0.1

Random = Callable[[], float]  # a float in [0, 1), like random.random


class Planner:
    def __init__(self, latency: LatencyTracker, rand: Random = random.random) -> None:
        self.latency = latency
        self.rand = rand

    def order(self, route: Route, prompt_tokens: int, output_tokens: int | None) -> list[Target]:
        """Return the route's enabled targets in the order this request should try them."""
        targets = list(route.enabled_targets())
        terminal = route.terminal
        tail = [t for t in targets if terminal is not None and t.deployment.name == terminal.name]
        head = [t for t in targets if t not in tail]
        if route.strategy == "weighted":
            head = self._weighted(head)
        elif route.strategy == "cheapest":
            head = sorted(head, key=lambda t: _cost_key(t, prompt_tokens, output_tokens))
        elif route.strategy == "fastest":
            head = self._fastest(head)
        return head + tail

    def _weighted(self, targets: list[Target]) -> list[Target]:
        """Draw targets one by one with probability proportional to weight, without replacement."""
        remaining = list(targets)
        ordered: list[Target] = []
        while remaining:
            point = self.rand() * sum(t.weight for t in remaining)
            for target in remaining:
                point -= target.weight
                if point < 0:
                    break
            ordered.append(target)
            remaining.remove(target)
        return ordered

    def _fastest(self, targets: list[Target]) -> list[Target]:
        if self.rand() < EXPLORATION:
            return self._weighted(targets)
        # Deployments with no samples yet go first, so each one gets measured.
        return sorted(targets, key=lambda t: self.latency.average(t.deployment.name) or 0.0)


def _cost_key(target: Target, prompt_tokens: int, output_tokens: int | None) -> tuple[int, Decimal]:
    cost = worst_case_cost(target.deployment.price, prompt_tokens, output_tokens or 1)
    # Unpriced deployments sort after every priced one: their cost is unknown, not zero.
    return (1, Decimal(0)) if cost is None else (0, cost)
