"""Target ordering by strategy, with an injected random source."""

from __future__ import annotations

from decimal import Decimal

from sage_bridge.config.loader import LoadedConfig
from sage_bridge.config.schema import DeploymentConfig, PriceConfig, RetryPolicyConfig
from sage_bridge.graph.model import Deployment, Route, Target
from sage_bridge.routing.latency import LatencyTracker
from sage_bridge.routing.strategies import Planner


def deployment(name: str, price: tuple[str, str] | None = None, remote: bool = True) -> Deployment:
    priced = PriceConfig(input=Decimal(price[0]), output=Decimal(price[1])) if price else None
    return Deployment(name, "p", "openai", name, DeploymentConfig(provider="p", model=name), priced, remote, name, "p")


def route(strategy: str, targets: list[Target], terminal: Deployment | None = None) -> Route:
    all_targets = tuple(targets) + ((Target(terminal),) if terminal else ())
    return Route("r", strategy, all_targets, RetryPolicyConfig(), terminal)  # type: ignore[arg-type]


def names(targets: list[Target]) -> list[str]:
    return [target.deployment.name for target in targets]


def sequence(*values: float):  # type: ignore[no-untyped-def]
    iterator = iter(values)
    return lambda: next(iterator)


LOCAL = deployment("local", ("0", "0"), remote=False)


def test_fallback_keeps_order_and_terminal_last() -> None:
    planner = Planner(LatencyTracker())
    ordered = planner.order(route("fallback", [Target(deployment("a")), Target(deployment("b"))], LOCAL), 10, 10)
    assert names(ordered) == ["a", "b", "local"]


def test_weighted_draws_by_weight() -> None:
    targets = [Target(deployment("a"), 1), Target(deployment("b"), 3)]
    # 0.5 * 4 = 2.0 lands in b's share [1, 4); then a is all that remains.
    assert names(Planner(LatencyTracker(), sequence(0.5, 0.0)).order(route("weighted", targets, LOCAL), 1, 1)) == ["b", "a", "local"]
    # 0.1 * 4 = 0.4 lands in a's share [0, 1).
    assert names(Planner(LatencyTracker(), sequence(0.1, 0.0)).order(route("weighted", targets), 1, 1)) == ["a", "b"]


def test_cheapest_orders_by_price_and_puts_unpriced_last() -> None:
    targets = [Target(deployment("dear", ("5", "25"))), Target(deployment("unpriced")), Target(deployment("cheap", ("0.15", "0.6")))]
    ordered = Planner(LatencyTracker()).order(route("cheapest", targets, LOCAL), 1000, 100)
    assert names(ordered) == ["cheap", "dear", "unpriced", "local"]


def test_fastest_prefers_low_latency_and_measures_unknown_first() -> None:
    latency = LatencyTracker()
    latency.record("slow", 2.0)
    latency.record("fast", 0.2)
    targets = [Target(deployment("slow")), Target(deployment("fast")), Target(deployment("new"))]
    ordered = Planner(latency, sequence(0.9)).order(route("fastest", targets, LOCAL), 1, 1)
    assert names(ordered) == ["new", "fast", "slow", "local"]


def test_fastest_explores_sometimes() -> None:
    latency = LatencyTracker()
    latency.record("slow", 2.0)
    latency.record("fast", 0.2)
    targets = [Target(deployment("fast")), Target(deployment("slow"))]
    # 0.05 < exploration rate: a weighted draw (0.9 * 2 = 1.8 picks "slow") replaces the ranking.
    ordered = Planner(latency, sequence(0.05, 0.9, 0.0)).order(route("fastest", targets), 1, 1)
    assert names(ordered) == ["slow", "fast"]


def test_latency_average_moves_toward_new_samples() -> None:
    latency = LatencyTracker()
    latency.record("a", 1.0)
    latency.record("a", 2.0)
    average = latency.average("a")
    assert average is not None
    assert 1.0 < average < 2.0


__all__ = ["LoadedConfig"]
