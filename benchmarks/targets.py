"""The bridge's performance targets, checked against one run's results (never in unit tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.scenario_local import SHIPPED_THREADS

DIRECT = "direct to mock"
BARE = "bare aiohttp proxy"
PLAIN = "bridge (plain)"
FULL = "bridge (full)"
LITELLM = "LiteLLM proxy"

SOAK_TARGET = 100_000  # requests the no-growth target requires
# RSS change read as "no growth". An estimate: allocator arenas and SQLite's page cache can move RSS
# this much without a leak; the soak table shows the real curve.
GROWTH_TOLERANCE_MB = 4.0
IDLE_LIMIT_MB = 80.0


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    target: str
    measured: str
    status: str  # PASS, FAIL, PENDING (the feature is not built yet), NOT RUN, INCOMPLETE


def _point(results: dict[str, Any], sweep: str, server: str, concurrency: int) -> dict[str, Any] | None:
    point = results.get("sweeps", {}).get(sweep, {}).get(server, {}).get(str(concurrency))
    return point["median"] if point else None


def added_ms(results: dict[str, Any], sweep: str, server: str, field: str) -> float | None:
    """Return the server's median `field` at concurrency 1 minus the direct-to-mock median."""
    through = _point(results, sweep, server, 1)
    direct = _point(results, sweep, DIRECT, 1)
    if not through or not direct or through[field] is None or direct[field] is None:
        return None
    return float(through[field] - direct[field])


def _ratio_verdict(name: str, target: str, value: float | None, limit: float, at_least: bool, unit: str) -> Verdict:
    if value is None:
        return Verdict(name, target, "not measured", "NOT RUN")
    passed = value >= limit if at_least else value <= limit
    return Verdict(name, target, f"{value:.2f}{unit}", "PASS" if passed else "FAIL")


def _rps_ratio(results: dict[str, Any], server: str, baseline: str) -> float | None:
    ours = _point(results, "json", server, 32)
    theirs = _point(results, "json", baseline, 32)
    if not ours or not theirs or not theirs["rps"]:
        return None
    return float(ours["rps"] / theirs["rps"])


def _added_ratio(results: dict[str, Any], sweep: str, field: str) -> float | None:
    ours = added_ms(results, sweep, FULL, field)
    bare = added_ms(results, sweep, BARE, field)
    if ours is None or bare is None or bare <= 0:
        return None
    return ours / bare


def _memory_verdicts(memory: dict[str, Any] | None) -> list[Verdict]:
    if not memory:
        return [Verdict("idle memory", f"< {IDLE_LIMIT_MB:.0f} MB", "not measured", "NOT RUN"),
                Verdict("memory growth", "none over 100,000 requests", "not measured", "NOT RUN")]
    # The target is in MB (10^6 bytes); /proc reports kB that are KiB, so MiB are converted.
    idle = memory["idle_start_mb"] * 1.048576
    after = memory["idle_end_mb"] * 1.048576
    idle_verdict = Verdict("idle memory, no local model", f"< {IDLE_LIMIT_MB:.0f} MB RSS, fresh daemon",
                           f"{idle:.1f} MB ({after:.1f} MB idle after the soak)", "PASS" if idle < IDLE_LIMIT_MB else "FAIL")
    growth = memory["growth_mb"]
    if growth is None:
        return [idle_verdict, Verdict("memory growth", "none over 100,000 requests", "not measured", "NOT RUN")]
    status = "PASS"
    if growth > GROWTH_TOLERANCE_MB:
        status = "FAIL"
    elif memory["requests"] < SOAK_TARGET:
        status = "INCOMPLETE"  # no growth so far, but on fewer requests than the target requires
    measured = f"{growth:+.1f} MiB over {memory['requests']:,} requests"
    return [idle_verdict, Verdict("memory growth", f"<= {GROWTH_TOLERANCE_MB:.0f} MiB over {SOAK_TARGET:,} requests", measured, status)]


def _reload_verdict(reload: dict[str, Any] | None) -> Verdict:
    target = "0 failed requests while bridge.yaml changes 10 times"
    if not reload:
        return Verdict("reload under load", target, "not measured", "NOT RUN")
    runs = list(reload.values())
    failed = sum(run["failed_requests"] for run in runs)
    sent = sum(run["load"]["sent"] for run in runs)
    seen = ", ".join(f"{run['reloads_observed']} reloads seen with {run['mode']}" for run in runs)
    measured = f"{failed} failed of {sent:,}; {seen}"
    if failed or not all(run["daemon_alive"] for run in runs):
        return Verdict("reload under load", target, measured, "FAIL")
    if not any(run["reloads_observed"] for run in runs):
        return Verdict("reload under load", target, measured + " (the daemon does not reload yet)", "PENDING")
    return Verdict("reload under load", target, measured, "PASS")


def _local_verdict(runs: list[dict[str, Any]] | None) -> Verdict:
    target = f">= 0.95 x llama-cpp-python direct, {SHIPPED_THREADS} threads as in the default bridge.yaml"
    local = next((run for run in runs or [] if run["threads"] == SHIPPED_THREADS), None)
    if not local or not local["direct"]["tokens_per_second"]:
        return Verdict("local tokens/s", target, "not measured", "NOT RUN")
    ratio = local["bridge"]["tokens_per_second"] / local["direct"]["tokens_per_second"]
    return _ratio_verdict("local tokens/s", target, ratio, 0.95, True, "x")


def evaluate(results: dict[str, Any]) -> list[Verdict]:
    return [
        _ratio_verdict("throughput vs bare proxy", ">= 0.5 x bare proxy at concurrency 32, every feature on",
                       _rps_ratio(results, FULL, BARE), 0.5, True, "x"),
        _ratio_verdict("throughput vs LiteLLM", ">= 15 x LiteLLM at concurrency 32",
                       _rps_ratio(results, FULL, LITELLM), 15.0, True, "x"),
        _ratio_verdict("added latency", "<= 2 x the bare proxy's at concurrency 1",
                       _added_ratio(results, "json", "p50"), 2.0, False, "x"),
        _ratio_verdict("added time to first token", "<= 2 x the bare proxy's at concurrency 1",
                       _added_ratio(results, "stream", "ttft_p50"), 2.0, False, "x"),
        _local_verdict(results.get("local")),
        *_memory_verdicts(results.get("memory")),
        _reload_verdict(results.get("reload")),
    ]
