"""Limiters that outlive config reloads, keyed by the identity of what they limit.

A deployment's identity is its name, provider and provider model: while those stay, its limiter
and the usage counted in it survive a reload, and changed limits are adopted in place. A new
provider or model behind the same name is another upstream, so it starts with a fresh limiter.
A client's identity is its name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sage_bridge.config.schema import BridgeConfig, ClientConfig, DeploymentConfig, LimitsConfig
from sage_bridge.limits.admission import AdmissionGate, AdmissionStatus
from sage_bridge.limits.clock import Clock, LoopClock
from sage_bridge.limits.limiter import LimiterStatus, LimitSettings, RequestLimiter, Scope

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeploymentIdentity:
    """Identity of a deployment across config versions: the same name on the same upstream model."""

    name: str
    provider: str
    model: str | None

    @classmethod
    def of(cls, name: str, config: DeploymentConfig) -> DeploymentIdentity:
        return cls(name=name, provider=config.provider, model=config.model or config.path)


@dataclass(frozen=True, slots=True)
class LimitsSnapshot:
    """Every limiter's usage, for `bridgectl status`, sorted by name."""

    deployments: tuple[LimiterStatus, ...]
    clients: tuple[LimiterStatus, ...]
    admission: AdmissionStatus


class LimiterRegistry:
    """The limiters of every deployment and client, plus the global admission gate."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or LoopClock()
        self._deployments: dict[DeploymentIdentity, RequestLimiter] = {}
        self._by_name: dict[str, RequestLimiter] = {}
        self._clients: dict[str, RequestLimiter] = {}
        self.admission = AdmissionGate(clock=self._clock)

    def apply_config(self, config: BridgeConfig) -> None:
        self.apply(config.models, config.clients, config.limits)

    def apply(
        self,
        deployments: Mapping[str, DeploymentConfig],
        clients: Mapping[str, ClientConfig],
        limits: LimitsConfig,
    ) -> None:
        """Match limiters to a new config: keep unchanged ones, adopt new limits, drop the rest.

        Permits taken from a dropped limiter stay valid and release into it harmlessly.
        """
        limiters: dict[DeploymentIdentity, RequestLimiter] = {}
        for name, config in deployments.items():
            identity = DeploymentIdentity.of(name, config)
            previous = self._deployments.get(identity)
            limiters[identity] = self._reuse(previous, "deployment", name, LimitSettings.of(config))
        self._deployments = limiters
        self._by_name = {identity.name: limiter for identity, limiter in limiters.items()}

        self._clients = {
            name: self._reuse(self._clients.get(name), "client", name, LimitSettings.of(config))
            for name, config in clients.items()
        }
        self.admission.reconfigure(limits)

    def deployment(self, name: str) -> RequestLimiter:
        """Return the limiter of deployment `name`; raise KeyError if the config has none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f'no limiter for deployment "{name}": it is not in the applied config') from None

    def client(self, name: str) -> RequestLimiter | None:
        """Return the limiter of client `name`, or None for a caller with no `clients:` entry."""
        return self._clients.get(name)

    def snapshot(self) -> LimitsSnapshot:
        return LimitsSnapshot(
            deployments=tuple(self._by_name[name].status() for name in sorted(self._by_name)),
            clients=tuple(self._clients[name].status() for name in sorted(self._clients)),
            admission=self.admission.status(),
        )

    def _reuse(
        self, limiter: RequestLimiter | None, scope: Scope, name: str, settings: LimitSettings
    ) -> RequestLimiter:
        if limiter is None:
            logger.debug('new limiter for %s "%s": %s', scope, name, settings)
            return RequestLimiter(scope, name, settings, self._clock)
        limiter.reconfigure(settings)
        return limiter
