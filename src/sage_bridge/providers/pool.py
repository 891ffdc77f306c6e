"""Provider adapters that outlive config reloads, keyed by the identity of their config.

A reload reuses the adapter (and so its pooled HTTP client or loaded local models) of every
provider whose config did not change, builds adapters for new or changed ones, and closes the
rest once the new graph is in place.
"""

from __future__ import annotations

import logging

from sage_bridge.graph.model import Deployment, RoutingGraph
from sage_bridge.providers.base import Provider
from sage_bridge.providers.registry import build_provider

log = logging.getLogger(__name__)


class ProviderPool:
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}  # provider identity -> adapter

    def get(self, deployment: Deployment) -> Provider:
        return self._providers[deployment.provider_identity]

    async def prepare(self, graph: RoutingGraph) -> list[Provider]:
        """Build adapters the graph needs and load its local models; return the ones it no
        longer needs, for `retire` once the graph is in service."""
        config = graph.loaded.config
        wanted: dict[str, Provider] = {}
        for deployment in graph.deployments.values():
            if not deployment.enabled:
                continue  # a disabled deployment never gets an adapter, so its SDK is never imported
            identity = deployment.provider_identity
            if identity not in wanted:
                existing = self._providers.get(identity)
                wanted[identity] = existing or build_provider(deployment.provider, config.providers[deployment.provider])
            await wanted[identity].prepare(deployment.config)
        unused = [provider for identity, provider in self._providers.items() if identity not in wanted]
        # Requests still running on the old graph keep finding the unused adapters until retire.
        self._providers.update(wanted)
        return unused

    async def retire(self, providers: list[Provider]) -> None:
        self._providers = {key: value for key, value in self._providers.items() if value not in providers}
        for provider in providers:
            log.info('closing provider "%s" (type %s), which the config no longer uses', provider.name, provider.type_name)
            await provider.aclose()

    async def aclose(self) -> None:
        await self.retire(list(self._providers.values()))
        self._providers.clear()
