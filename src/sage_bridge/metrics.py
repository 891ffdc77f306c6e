"""Prometheus metrics: request counters and histograms, plus the daemon's state at scrape time.

Each daemon (and each test app) owns one CollectorRegistry, never the process-global one, so
two apps in one process do not share series. Request-time series update cached label children,
which keeps the cost per request to a few dictionary lookups and lock acquisitions. Budgets,
limiters, cooldowns and the config are read from the runtime only when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import GCCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from sage_bridge.routing.context import RequestContext
from sage_bridge.types import Usage

if TYPE_CHECKING:
    from sage_bridge.runtime import Runtime

Outcome = Literal["ok", "rejected", "error", "cancelled"]
ReloadOutcome = Literal["accepted", "rejected", "unchanged"]

# Seconds. Upstream calls range from tens of milliseconds to minutes for long generations.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


@dataclass(slots=True)
class _RouteSeries:
    """The label children of one (route, deployment) pair, created on its first request."""

    latency: Histogram
    ttft: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter
    cost: Counter


class Metrics:
    """The daemon's Prometheus registry and the calls that feed it."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.registry = CollectorRegistry()
        labels = ["route", "deployment"]
        self._requests = Counter("sage_bridge_requests", "Finished API requests by outcome",
                                 [*labels, "outcome"], registry=self.registry)
        self._rejections = Counter("sage_bridge_rejections", "Refused or failed API requests by error code",
                                   ["code"], registry=self.registry)
        self._latency = Histogram("sage_bridge_request_duration_seconds", "Time from request to last byte",
                                  labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self._ttft = Histogram("sage_bridge_time_to_first_token_seconds", "Time to the first streamed output",
                               labels, buckets=TTFT_BUCKETS, registry=self.registry)
        self._overhead = Histogram("sage_bridge_overhead_seconds", "Time spent in the bridge, upstream time excluded",
                                   buckets=OVERHEAD_BUCKETS, registry=self.registry)
        self._tokens = Counter("sage_bridge_tokens", "Tokens of answered requests", [*labels, "kind"],
                               registry=self.registry)
        self._cost = Counter("sage_bridge_cost_usd", "USD cost of answered requests", labels, registry=self.registry)
        self._reloads = Counter("sage_bridge_reloads", "Config reloads by outcome", ["outcome"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._series: dict[tuple[str, str], _RouteSeries] = {}
        self._outcomes: dict[tuple[str, str, str], Counter] = {}
        if runtime is not None:
            self.registry.register(RuntimeCollector(runtime))

    def request_finished(self, ctx: RequestContext, usage: Usage, outcome: Outcome = "ok") -> None:
        """Record a request whose response was sent, streamed ones included."""
        route, deployment = _labels(ctx)
        self._outcome(route, deployment, outcome).inc()
        series = self._route_series(route, deployment)
        series.latency.observe(ctx.elapsed_ms() / 1000)
        if ctx.first_token_ms is not None:
            series.ttft.observe(ctx.first_token_ms / 1000)
        self._overhead.observe(ctx.overhead_ms() / 1000)
        series.prompt_tokens.inc(usage.prompt_tokens)
        series.completion_tokens.inc(usage.completion_tokens)
        if ctx.cost is not None:
            series.cost.inc(float(ctx.cost))

    def request_failed(self, ctx: RequestContext | None, outcome: Outcome, code: str) -> None:
        """Record a request that got an error status, or that its client cancelled."""
        route, deployment = _labels(ctx)
        self._outcome(route, deployment, outcome).inc()
        self._rejections.labels(code).inc()

    def reload_finished(self, outcome: ReloadOutcome | str) -> None:
        """Count one config reload: "accepted", "rejected" (the old graph stays) or "unchanged"."""
        self._reloads.labels(outcome).inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Return every series and its content type, in the format the Accept header requests.

        Prometheus's classic text format is the default, and OpenMetrics is used when requested.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _outcome(self, route: str, deployment: str, outcome: str) -> Counter:
        key = (route, deployment, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self._requests.labels(route, deployment, outcome)
        return child

    def _route_series(self, route: str, deployment: str) -> _RouteSeries:
        series = self._series.get((route, deployment))
        if series is None:
            series = self._series[(route, deployment)] = _RouteSeries(
                latency=self._latency.labels(route, deployment),
                ttft=self._ttft.labels(route, deployment),
                prompt_tokens=self._tokens.labels(route, deployment, "prompt"),
                completion_tokens=self._tokens.labels(route, deployment, "completion"),
                cost=self._cost.labels(route, deployment),
            )
        return series


def _labels(ctx: RequestContext | None) -> tuple[str, str]:
    # Only configured routes and deployments reach a context, so these labels stay bounded.
    if ctx is None:
        return "", ""
    route = ctx.route.name if ctx.route is not None else ""
    deployment = ctx.deployment.name if ctx.deployment is not None else ""
    return route, deployment


class RuntimeCollector(Collector):
    """Read the config, budgets, limiters and cooldowns from the runtime at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from self._daemon()
        yield from self._budgets()
        yield from self._limiters()
        yield from self._cooldowns()

    def _daemon(self) -> Iterator[Metric]:
        runtime = self.runtime
        loaded = runtime.graph.loaded
        info = InfoMetricFamily("sage_bridge_config", "The config the daemon serves", labels=["sha256", "path"])
        info.add_metric([loaded.digest, str(loaded.path)], {})
        yield info
        yield GaugeMetricFamily("sage_bridge_config_loaded_timestamp_seconds", "When the current config was adopted",
                                value=runtime.loaded_at)
        yield GaugeMetricFamily("sage_bridge_in_flight_requests", "Requests being served", value=runtime.in_flight)
        state = GaugeMetricFamily("sage_bridge_state", "1 for the daemon's current lifecycle state", labels=["state"])
        state.add_metric([runtime.state.value], 1)
        yield state

    def _budgets(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(f"sage_bridge_budget_{name}", text, labels=["scope", "window"])
            for name, text in (
                ("spent_usd", "USD spent in the budget's current window"),
                ("reserved_usd", "USD held by requests in flight"),
                ("limit_usd", "The budget's USD cap"),
                ("remaining_usd", "USD left in the window after spend and reservations"),
                ("spent_tokens", "Tokens spent in the budget's current window"),
                ("limit_tokens", "The budget's token cap"),
                ("remaining_tokens", "Tokens left in the window after spend and reservations"),
            )
        }
        seen: dict[tuple[str, str], int] = {}
        for budget in self.runtime.registries.budgets.snapshot():
            labels = _unique_labels(seen, budget.scope, budget.window)
            families["spent_usd"].add_metric(labels, float(budget.spent_usd))
            families["reserved_usd"].add_metric(labels, float(budget.reserved_usd))
            families["spent_tokens"].add_metric(labels, budget.spent_tokens)
            if budget.limit_usd is not None and budget.remaining_usd is not None:
                families["limit_usd"].add_metric(labels, float(budget.limit_usd))
                families["remaining_usd"].add_metric(labels, float(budget.remaining_usd))
            if budget.limit_tokens is not None and budget.remaining_tokens is not None:
                families["limit_tokens"].add_metric(labels, budget.limit_tokens)
                families["remaining_tokens"].add_metric(labels, budget.remaining_tokens)
        yield from families.values()

    def _limiters(self) -> Iterator[Metric]:
        snapshot = self.runtime.registries.limiters.snapshot()
        labels = ["scope", "name"]
        rpm = GaugeMetricFamily("sage_bridge_limiter_rpm_used", "Requests counted in the limiter's minute", labels=labels)
        rpm_limit = GaugeMetricFamily("sage_bridge_limiter_rpm_limit", "The limiter's requests per minute", labels=labels)
        tpm = GaugeMetricFamily("sage_bridge_limiter_tpm_used", "Tokens counted in the limiter's minute", labels=labels)
        tpm_limit = GaugeMetricFamily("sage_bridge_limiter_tpm_limit", "The limiter's tokens per minute", labels=labels)
        in_flight = GaugeMetricFamily("sage_bridge_limiter_in_flight", "Requests holding a limiter slot", labels=labels)
        held = GaugeMetricFamily("sage_bridge_limiter_held_back_seconds",
                                 "Seconds until an upstream rate limit hold-back ends", labels=labels)
        for status in (*snapshot.deployments, *snapshot.clients):
            names = [status.scope, status.name]
            in_flight.add_metric(names, status.in_flight)
            held.add_metric(names, status.held_back_for)
            if status.rpm_used is not None and status.rpm_limit is not None:
                rpm.add_metric(names, status.rpm_used)
                rpm_limit.add_metric(names, status.rpm_limit)
            if status.tpm_used is not None and status.tpm_limit is not None:
                tpm.add_metric(names, status.tpm_used)
                tpm_limit.add_metric(names, status.tpm_limit)
        yield from (rpm, rpm_limit, tpm, tpm_limit, in_flight, held)

        admission = snapshot.admission
        yield GaugeMetricFamily("sage_bridge_admission_in_flight", "Requests admitted under the global cap",
                                value=admission.in_flight)
        yield GaugeMetricFamily("sage_bridge_admission_queued", "Requests waiting for admission", value=admission.queued)

    def _cooldowns(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("sage_bridge_cooldown_state", "1 for each deployment's breaker state",
                                  labels=["deployment", "state"])
        failures = GaugeMetricFamily("sage_bridge_cooldown_failures", "Counted failures in the breaker's window",
                                     labels=["deployment"])
        remaining = GaugeMetricFamily("sage_bridge_cooldown_remaining_seconds", "Seconds until a probe may go through",
                                      labels=["deployment"])
        for status in self.runtime.registries.cooldowns.snapshot():
            state.add_metric([status.deployment, status.state.value], 1)
            failures.add_metric([status.deployment], status.failures_in_window)
            remaining.add_metric([status.deployment], status.cooldown_remaining)
        yield from (state, failures, remaining)


def _unique_labels(seen: dict[tuple[str, str], int], scope: str, window: str) -> list[str]:
    # Two budgets may share a scope and a window; number the later ones so series stay distinct.
    ordinal = seen.get((scope, window), 0)
    seen[(scope, window)] = ordinal + 1
    return [scope, window if ordinal == 0 else f"{window}#{ordinal}"]
