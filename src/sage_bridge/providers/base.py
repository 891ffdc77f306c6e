"""The contract every provider adapter implements.

An adapter is built once per configured provider and reused across requests and reloads while
the provider's config is unchanged. It translates the unified types (sage_bridge.types) to and
from one provider's wire format and maps every SDK or transport exception onto UpstreamError.
It has no access to routes, budgets or limits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Hashable
from typing import Any, ClassVar

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.types import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamEvent


class Provider(ABC):
    """One configured provider account (or the local llama.cpp runtime)."""

    #: the `type:` value in bridge.yaml that selects this adapter
    type_name: ClassVar[str]
    #: False for providers that serve from this machine (no key, no network, no price)
    remote: ClassVar[bool] = True

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    def disabled_reason(self) -> str | None:
        """Return why this provider cannot serve (a missing key, say), or None when it can."""
        return None

    async def prepare(self, deployment: DeploymentConfig) -> None:
        """Load or warm up what `deployment` needs before the first request (local models)."""

    def release(self, deployment: DeploymentConfig) -> None:
        """Free what `prepare` loaded for `deployment`, once no request uses it any more."""

    def resource_key(self, deployment: DeploymentConfig) -> Hashable | None:
        """Identify what `prepare` loads for `deployment`, or None when it loads nothing.

        Deployments with equal keys share one resource (a change of price keeps the loaded
        model), so the pool calls `release` only when no deployment in service has the key.
        """
        return None

    @abstractmethod
    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        """Return one complete answer."""

    @abstractmethod
    def stream_chat(self, request: ChatRequest, deployment: DeploymentConfig) -> AsyncIterator[StreamEvent]:
        """Yield deltas, then one finish_reason event, then one usage event."""

    async def embed(self, request: EmbeddingRequest, deployment: DeploymentConfig) -> EmbeddingResult:
        from sage_bridge.errors import InvalidRequest

        raise InvalidRequest(
            f'provider "{self.name}" (type {self.type_name}) does not serve embeddings; '
            "route embedding requests to an openai, cohere or llama_cpp deployment"
        )

    async def aclose(self) -> None:
        """Close pooled connections. Called when a reload drops or replaces this provider."""
