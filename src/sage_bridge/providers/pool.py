"""Provider adapters that outlive config reloads, keyed by the identity of their config.

A reload reuses the adapter (and so its pooled HTTP client or loaded local models) of every
provider whose config did not change, and builds adapters for new or changed ones. What no
graph in service uses any more is closed by `collect`, which the runtime calls only after the
last request on a replaced graph has finished.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.graph.model import Deployment, RoutingGraph
from sage_bridge.providers.base import Provider
from sage_bridge.providers.registry import build_provider

log = logging.getLogger(__name__)


class PrepareFailed(Exception):
    """Raised when building the adapter or loading the model of one deployment fails."""

    def __init__(self, deployment: str, cause: Exception) -> None:
        super().__init__(f'deployment "{deployment}" could not be prepared: {cause}')
        self.deployment = deployment


class ProviderPool:
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}  # provider identity -> adapter
        # provider identity -> resource key -> a deployment config that `prepare` loaded it for
        self._resources: dict[str, dict[Hashable, DeploymentConfig]] = {}

    def get(self, deployment: Deployment) -> Provider:
        return self._providers[deployment.provider_identity]

    async def prepare(self, graph: RoutingGraph) -> None:
        """Build the adapters `graph` needs and load its local models, reusing those in place.

        Raises PrepareFailed for the first deployment that fails. What was built or loaded
        until then stays in the pool, for the next `collect` to free.
        """
        for deployment in graph.deployments.values():
            if not deployment.enabled:
                continue  # a disabled deployment never gets an adapter, so its SDK is never imported
            try:
                await self._prepare_one(graph, deployment)
            except Exception as exc:  # any SDK or llama.cpp failure must reject the config, not crash
                raise PrepareFailed(deployment.name, exc) from exc

    async def _prepare_one(self, graph: RoutingGraph, deployment: Deployment) -> None:
        identity = deployment.provider_identity
        provider = self._providers.get(identity)
        if provider is None:
            config = graph.loaded.config.providers[deployment.provider]
            provider = self._providers[identity] = build_provider(deployment.provider, config)
        await provider.prepare(deployment.config)
        key = provider.resource_key(deployment.config)
        if key is not None:
            self._resources.setdefault(identity, {}).setdefault(key, deployment.config)

    async def collect(self, live: Collection[RoutingGraph]) -> None:
        """Close the adapters and release the local models that no graph in `live` uses.

        The caller must make sure no request still runs on a graph it leaves out of `live`.
        """
        needed = self._needed_resources(live)
        for identity, provider in list(self._providers.items()):
            if identity in needed:
                self._release_unneeded(identity, provider, needed[identity])
            else:
                await self._close(identity, provider)

    def _needed_resources(self, live: Collection[RoutingGraph]) -> dict[str, set[Hashable]]:
        needed: dict[str, set[Hashable]] = {}
        for graph in live:
            for deployment in graph.deployments.values():
                identity = deployment.provider_identity
                provider = self._providers.get(identity)
                if not deployment.enabled or provider is None:
                    continue
                needed.setdefault(identity, set()).add(provider.resource_key(deployment.config))
        return needed

    def _release_unneeded(self, identity: str, provider: Provider, needed: set[Hashable]) -> None:
        resources = self._resources.get(identity, {})
        for key in [key for key in resources if key not in needed]:
            config = resources.pop(key)
            # LocalModel.close runs on the model's worker thread, after any generation still on it.
            log.info('provider "%s" releases %s, which no deployment in service uses', provider.name, config.path or config.model)
            provider.release(config)

    async def _close(self, identity: str, provider: Provider) -> None:
        del self._providers[identity]
        self._resources.pop(identity, None)
        log.info('closing provider "%s" (type %s), which the config no longer uses', provider.name, provider.type_name)
        await provider.aclose()

    async def aclose(self) -> None:
        """Close every adapter, at shutdown."""
        providers, self._providers = self._providers, {}
        self._resources.clear()
        for provider in providers.values():
            await provider.aclose()
