"""The state of one request while it runs: route, attempts, timings and cost."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from sage_bridge.errors import Attempt
from sage_bridge.graph.model import Deployment, Route


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client: str
    endpoint: str = "chat"
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0  # time spent waiting on deployments, excluded from overhead
    client_seconds: float = 0.0  # time spent writing a stream to its client, excluded from overhead
    failures: list[Attempt] = field(default_factory=list)
    route: Route | None = None
    deployment: Deployment | None = None
    cost: Decimal | None = None  # None until settled, or when the deployment is unpriced
    cost_settled: bool = False
    estimated_prompt_tokens: int = 0
    first_token_ms: float | None = None
    rate_limits: dict[str, str] | None = None  # rate-limit headers of the provider that served it

    @property
    def attempts(self) -> int:
        """Count every call made to a deployment, retries and the successful call included."""
        return sum(1 for failure in self.failures if failure.kind not in SKIP_KINDS) + (1 if self.deployment else 0)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds - self.client_seconds) * 1000)

    def skip(self, deployment: Deployment, kind: str, message: str) -> None:
        """Note a target the plan passed over without calling it."""
        self.failures.append(Attempt(deployment.name, kind, message))


# Reasons a target was passed over without a call; they do not count as attempts.
SKIP_KINDS = frozenset(
    {"cooling_down", "context_window", "rate_limited_locally", "over_budget", "unpriced", "unsupported_params", "removed"}
)
