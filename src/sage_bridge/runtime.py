"""The daemon's live state: the current routing graph and what outlives it across reloads.

Budget spend, limiter buckets, cooldowns, latency averages, provider adapters (with their HTTP
clients and loaded local models) and the ledger live here, keyed by stable identities, so a
new graph can be adopted without losing them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field

from sage_bridge.accounting.budgets import BudgetBook
from sage_bridge.accounting.ledger import Ledger
from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.limits.clock import Clock
from sage_bridge.limits.cooldown import CooldownRegistry
from sage_bridge.limits.registry import LimiterRegistry
from sage_bridge.providers.pool import ProviderPool
from sage_bridge.routing.latency import LatencyTracker
from sage_bridge.routing.lease import LeaseIssuer
from sage_bridge.routing.router import Router
from sage_bridge.routing.settlement import Accountant
from sage_bridge.routing.strategies import Planner

log = logging.getLogger(__name__)


class DaemonState(enum.Enum):
    STARTING = "starting"  # loading the config and local models; the socket is not open yet
    SERVING = "serving"  # answering requests on the current graph
    RELOADING = "reloading"  # still serving on the current graph while a new one is compiled
    DRAINING = "draining"  # no new connections; in-flight requests finish within the grace period
    STOPPED = "stopped"  # the socket is removed and the process is about to exit


@dataclass(slots=True)
class Registries:
    """State that outlives a graph."""

    pool: ProviderPool
    limiters: LimiterRegistry
    cooldowns: CooldownRegistry
    budgets: BudgetBook
    latency: LatencyTracker
    ledger: Ledger

    @classmethod
    def create(cls, ledger: Ledger, clock: Clock | None = None) -> Registries:
        return cls(ProviderPool(), LimiterRegistry(clock), CooldownRegistry(clock=clock), BudgetBook(), LatencyTracker(), ledger)

    def router(self, clock: Clock | None = None) -> Router:
        leases = LeaseIssuer(self.budgets, self.limiters, self.cooldowns)
        accountant = Accountant(self.budgets, self.ledger, self.latency)
        return Router(self.pool, self.limiters, leases, accountant, Planner(self.latency), self.budgets, clock)


@dataclass(slots=True)
class Runtime:
    settings: DaemonSettings
    graph: RoutingGraph
    registries: Registries
    router: Router
    state: DaemonState = DaemonState.STARTING
    started_at: float = field(default_factory=time.time)
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0

    @classmethod
    async def start(cls, settings: DaemonSettings, graph: RoutingGraph, clock: Clock | None = None) -> Runtime:
        """Open the ledger, build the registries and adopt the first graph."""
        ledger = Ledger.in_state_dir(settings.state_path)
        await asyncio.to_thread(ledger.open)
        registries = Registries.create(ledger, clock)
        runtime = cls(settings, graph, registries, registries.router(clock))
        await runtime.adopt(graph)
        return runtime

    @property
    def pool(self) -> ProviderPool:
        return self.registries.pool

    async def adopt(self, graph: RoutingGraph) -> None:
        """Make `graph` the one new requests use, reusing the state of unchanged deployments.

        Everything that can fail or take long (building adapters, loading local models,
        checking budget windows) happens before the swap, so a failure leaves the old graph.
        """
        registries, config = self.registries, graph.loaded.config
        unused = await registries.pool.prepare(graph)
        registries.budgets.apply(config.budgets, history=registries.ledger, allow_unpriced=config.allow_unpriced)
        registries.limiters.apply_config(config)
        registries.cooldowns.apply(config.models)
        self.graph = graph
        self.loaded_at = time.time()
        # TODO: wait for requests still running on the previous graph before closing the
        # adapters it alone used; until then a reload that drops a provider can cut them off.
        await registries.pool.retire(unused)

    async def close(self) -> None:
        await self.registries.pool.aclose()
        await self.registries.ledger.close()
