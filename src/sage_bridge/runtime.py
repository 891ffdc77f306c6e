"""The daemon's live state: the current routing graph and what outlives it across reloads."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.providers.pool import ProviderPool
from sage_bridge.routing.router import Router


class DaemonState(enum.Enum):
    STARTING = "starting"  # loading the config and local models; the socket is not open yet
    SERVING = "serving"  # answering requests on the current graph
    RELOADING = "reloading"  # still serving on the current graph while a new one is compiled
    DRAINING = "draining"  # no new connections; in-flight requests finish within the grace period
    STOPPED = "stopped"  # the socket is removed and the process is about to exit


@dataclass(slots=True)
class Runtime:
    settings: DaemonSettings
    graph: RoutingGraph
    pool: ProviderPool
    router: Router
    state: DaemonState = DaemonState.STARTING
    started_at: float = field(default_factory=time.time)
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
