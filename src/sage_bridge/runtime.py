"""The daemon's live state: the routing graphs in service and what outlives them across reloads.

Budget spend, limiter buckets, cooldowns, latency averages, provider adapters (with their HTTP
clients and loaded local models) and the ledger live here, keyed by stable identities, so a
new graph can be adopted without losing them. Each request keeps the graph it started on until
it ends; what only a replaced graph used is closed after its last request.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sage_bridge.accounting.budgets import BudgetBook
from sage_bridge.accounting.ledger import Ledger
from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.limits.clock import Clock
from sage_bridge.limits.cooldown import CooldownPolicy, CooldownRegistry
from sage_bridge.limits.registry import LimiterRegistry
from sage_bridge.providers.pool import ProviderPool
from sage_bridge.routing.latency import LatencyTracker
from sage_bridge.routing.lease import LeaseIssuer
from sage_bridge.routing.router import Router
from sage_bridge.routing.settlement import Accountant
from sage_bridge.routing.strategies import Planner

if TYPE_CHECKING:
    from sage_bridge.metrics import Metrics

log = logging.getLogger(__name__)


class DaemonState(enum.Enum):
    STARTING = "starting"  # loading the config and local models; the socket is not open yet
    SERVING = "serving"  # answering requests on the current graph
    RELOADING = "reloading"  # still serving on the current graph while a new one is compiled
    DRAINING = "draining"  # no new connections; in-flight requests finish within the grace period
    STOPPED = "stopped"  # the socket is removed and the process is about to exit


_NEXT_STATES: dict[DaemonState, frozenset[DaemonState]] = {
    # STARTING -> STOPPED: the socket could not be opened, so nothing was ever served.
    DaemonState.STARTING: frozenset({DaemonState.SERVING, DaemonState.STOPPED}),
    DaemonState.SERVING: frozenset({DaemonState.RELOADING, DaemonState.DRAINING}),
    DaemonState.RELOADING: frozenset({DaemonState.SERVING, DaemonState.DRAINING}),
    DaemonState.DRAINING: frozenset({DaemonState.STOPPED}),
    DaemonState.STOPPED: frozenset(),
}


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
        return Router(self.pool, self.limiters, leases, accountant, Planner(self.latency), clock)


class GraphLoan:
    """A `with` block's hold on the current graph; its exit collects a retired graph's last use.

    A plain class rather than a contextlib generator, because every request enters one.
    """

    __slots__ = ("_graphs", "_collect", "_graph")

    def __init__(self, graphs: GraphsInService, collect: Callable[[RoutingGraph], None]) -> None:
        self._graphs = graphs
        self._collect = collect

    def __enter__(self) -> RoutingGraph:
        self._graph = self._graphs.enter()
        return self._graph

    def __exit__(self, *exc_info: object) -> None:
        if self._graphs.leave(self._graph):
            self._collect(self._graph)


class GraphsInService:
    """The current graph, and the replaced graphs that requests still run on, with the number of
    requests on each. Graphs are keyed by object id because a RoutingGraph is not hashable."""

    __slots__ = ("current", "_requests", "_retired")

    def __init__(self, current: RoutingGraph) -> None:
        self.current = current
        self._requests: dict[int, int] = {id(current): 0}
        self._retired: dict[int, RoutingGraph] = {}

    def enter(self) -> RoutingGraph:
        graph = self.current
        self._requests[id(graph)] += 1
        return graph

    def leave(self, graph: RoutingGraph) -> bool:
        """Count one request on `graph` as finished; return True if it was the last request on a
        replaced graph, which is then out of service."""
        key = id(graph)
        self._requests[key] -= 1
        if self._requests[key] or graph is self.current:
            return False
        del self._requests[key], self._retired[key]
        return True

    def replace(self, graph: RoutingGraph) -> None:
        previous, self.current = self.current, graph
        self._requests[id(graph)] = 0
        if self._requests[id(previous)]:
            self._retired[id(previous)] = previous
        else:
            del self._requests[id(previous)]

    def live(self) -> list[RoutingGraph]:
        return [self.current, *self._retired.values()]

    def retired(self) -> list[tuple[RoutingGraph, int]]:
        """Return each replaced graph still in service with its number of running requests."""
        return [(graph, self._requests[key]) for key, graph in self._retired.items()]


class Runtime:
    __slots__ = ("settings", "registries", "router", "started_at", "loaded_at", "in_flight", "metrics",
                 "_state", "_graphs", "_pool_lock", "_collections")

    def __init__(self, settings: DaemonSettings, graph: RoutingGraph, registries: Registries, router: Router) -> None:
        self.settings = settings
        self.registries = registries
        self.router = router
        self.started_at = self.loaded_at = time.time()
        self.in_flight = 0  # requests of every endpoint, counted by the server's middleware
        self.metrics: Metrics | None = None  # set once the server's app exists
        self._state = DaemonState.STARTING
        self._graphs = GraphsInService(graph)
        # Preparing a new graph and collecting what old ones used both change the pool: one at a time.
        self._pool_lock = asyncio.Lock()
        self._collections: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, settings: DaemonSettings, graph: RoutingGraph, clock: Clock | None = None) -> Runtime:
        """Open the ledger, build the registries and prepare the first graph.

        Raises PrepareFailed when a deployment's adapter or local model cannot be loaded.
        """
        ledger = Ledger.in_state_dir(settings.state_path, synchronous=graph.loaded.config.server.ledger_sync)
        await asyncio.to_thread(ledger.open)
        registries = Registries.create(ledger, clock)
        runtime = cls(settings, graph, registries, registries.router(clock))
        async with runtime._pool_lock:
            await runtime._prepare(graph)
        return runtime

    @property
    def graph(self) -> RoutingGraph:
        """The graph new requests use."""
        return self._graphs.current

    @property
    def pool(self) -> ProviderPool:
        return self.registries.pool

    @property
    def state(self) -> DaemonState:
        return self._state

    def move_to(self, state: DaemonState) -> None:
        """Change the lifecycle state; raise RuntimeError for a change the lifecycle forbids."""
        if state not in _NEXT_STATES[self._state]:
            allowed = ", ".join(sorted(next_state.value for next_state in _NEXT_STATES[self._state])) or "none"
            raise RuntimeError(
                f"the daemon cannot go from {self._state.value} to {state.value} (allowed from {self._state.value}: {allowed})"
            )
        log.debug("daemon state: %s -> %s", self._state.value, state.value)
        self._state = state

    @contextlib.contextmanager
    def reloading(self) -> Iterator[None]:
        """Be RELOADING for the duration, then SERVING again unless a drain began meanwhile."""
        self.move_to(DaemonState.RELOADING)
        try:
            yield
        finally:
            if self._state is DaemonState.RELOADING:
                self.move_to(DaemonState.SERVING)

    def hold_graph(self) -> GraphLoan:
        """Lend the current graph to one request from start to end, even across a reload."""
        return GraphLoan(self._graphs, self._schedule_collection)

    def retired_graphs(self) -> list[tuple[RoutingGraph, int]]:
        """Return each replaced graph that requests still run on, with their number."""
        return self._graphs.retired()

    async def adopt(self, graph: RoutingGraph) -> None:
        """Make `graph` the one new requests use, reusing the state of unchanged deployments.

        Everything that can fail or take long (building adapters, loading local models,
        checking budget windows) happens before the swap, so a failure leaves the old graph in
        service and raises PrepareFailed or ValueError. Requests running on the old graph keep
        it; what only it used is closed after the last of them, in a background task.
        """
        async with self._pool_lock:
            await self._prepare(graph)
            previous = self._graphs.current
            self._graphs.replace(graph)
            self.loaded_at = time.time()
            await self.registries.pool.collect(self._graphs.live())
        for retired, requests in self._graphs.retired():
            if retired is previous:
                log.info("%d requests still run on the previous config (sha256 %s); what only it uses is closed "
                         "after they finish", requests, previous.loaded.digest[:12])

    async def _prepare(self, graph: RoutingGraph) -> None:
        registries, config = self.registries, graph.loaded.config
        try:
            await registries.pool.prepare(graph)
            registries.budgets.apply(config.budgets, history=registries.ledger, allow_unpriced=config.allow_unpriced)
        except Exception:
            # Free what was loaded for the graph that will not be adopted.
            await registries.pool.collect(self._graphs.live())
            raise
        # A request still on the previous graph that reaches a deployment this graph removed finds
        # no limiter for it, and the router skips that target (LeaseIssuer.check_available).
        registries.limiters.apply_config(config)
        cooldown = config.cooldown
        registries.cooldowns.apply(
            config.models, CooldownPolicy(failures=cooldown.failures, window=cooldown.window, cooldown=cooldown.seconds)
        )

    def _schedule_collection(self, retired: RoutingGraph) -> None:
        log.info("the last request on the previous config (sha256 %s) finished; closing what only it used",
                 retired.loaded.digest[:12])
        task = asyncio.get_running_loop().create_task(self._collect())
        self._collections.add(task)
        task.add_done_callback(self._collection_done)

    async def _collect(self) -> None:
        async with self._pool_lock:
            await self.registries.pool.collect(self._graphs.live())

    def _collection_done(self, task: asyncio.Task[None]) -> None:
        self._collections.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("closing the providers of a replaced config failed", exc_info=task.exception())

    def reload_observed(self, outcome: str) -> None:
        """Count one reload with "accepted", "rejected" or "unchanged" in the metrics."""
        if self.metrics is not None:
            self.metrics.reload_finished(outcome)

    async def close(self) -> None:
        # Collections already started finish first: one cut short could leave an adapter half closed.
        await asyncio.gather(*self._collections, return_exceptions=True)
        await self.registries.pool.aclose()
        await self.registries.ledger.close()
