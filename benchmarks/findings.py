"""Findings computed from one run's results: what limits the bridge, with the numbers behind it."""

from __future__ import annotations

from typing import Any

from benchmarks.targets import BARE, DIRECT, FULL, added_ms

MIB_TO_MB = 1.048576  # 1 MiB is 1.048576 MB (10^6 bytes)


def _median(results: dict[str, Any], sweep: str, server: str, concurrency: str) -> dict[str, Any]:
    point: dict[str, Any] = results.get("sweeps", {}).get(sweep, {}).get(server, {}).get(concurrency, {}).get("median", {})
    return point


def _sdk_findings(results: dict[str, Any]) -> list[str]:
    sdk = results.get("sdk_client")
    bare = _median(results, "json", BARE, "32").get("rps")
    bridge = _median(results, "json", FULL, "32").get("rps")
    direct = _median(results, "json", DIRECT, "1").get("p50")
    if not sdk or not bare or not bridge or direct is None:
        return []
    ceiling = sdk["json"]["32"]["rps"]
    sdk_cost = sdk["json"]["1"]["p50"] - direct
    added = added_ms(results, "json", FULL, "p50")
    header = _median(results, "json", FULL, "1").get("bridge_overhead_p50")

    lines = [
        f"The openai SDK client alone, in its own process with only the mock beside it, reaches {ceiling:,.0f} "
        f"req/s at concurrency 32, {ceiling / bare:.2f} of the bare proxy's {bare:,.0f} req/s. That is why chat "
        f"to OpenAI-compatible upstreams no longer goes through the SDK: whole answers use an httptools "
        f"connection pool and streams use aiohttp, and the bridge reached {bridge:,.0f} req/s, "
        f"{bridge / bare:.2f} of the bare proxy, with every feature on.",
    ]

    if added is not None:
        lines.append(
            f"At concurrency 1 the SDK client alone adds {sdk_cost:.2f} ms over the aiohttp client on the same "
            f"path; the whole bridge adds {added:.2f} ms."
            + (f" Its `x-bridge-overhead-ms` header reports {header:.2f} ms, because it counts the time inside "
               "the provider adapter (the HTTP client included) as upstream time." if header is not None else "")
        )

    if sdk.get("stream", {}).get("32"):
        stream_bridge = _median(results, "stream", FULL, "32").get("rps")
        lines.append(
            f"Streams: the SDK alone completed {sdk['stream']['32']['rps']:,.0f} streams/s at concurrency 32 "
            f"(16 content chunks each), the bridge {stream_bridge or 0:,.0f}/s and the bare proxy "
            f"{_median(results, 'stream', BARE, '32').get('rps') or 0:,.0f}/s."
        )
    return lines


def _profile_findings(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile", {})
    all_threads = {item["name"]: item["percent"] for item in profile.get("json", {}).get("threads", [])}
    gil_threads = {item["name"]: item["percent"] for item in profile.get("json-gil", {}).get("threads", [])}
    if "ledger-writer" not in all_threads:
        return []
    return [
        f"The ledger's writer thread had {all_threads['ledger-writer']:.0f} % of all CPU samples under the JSON "
        f"load but {gil_threads.get('ledger-writer', 0.0):.1f} % of the samples that hold the GIL: its SQLite "
        "inserts run beside the event loop, so they use a second core's time more than they delay requests."
    ]


def _memory_findings(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle_rss", {}).get(FULL)
    memory = results.get("memory")
    if not idle or not memory or idle.get("after_sweeps") is None:
        return []
    return [
        f"Idle memory depends on history: a fresh full bridge holds {memory['idle_start_mb'] * MIB_TO_MB:.1f} MB, "
        f"{memory['idle_end_mb'] * MIB_TO_MB:.1f} MB after the 100,000-request soak at concurrency "
        f"{memory['concurrency']}, and {idle['after_sweeps'] * MIB_TO_MB:.1f} MB after the sweeps at concurrency "
        "up to 128. The growth stops after the first requests (see the soak table), so it is most likely the "
        "high-water mark of buffers and allocator arenas rather than a leak."
    ]


def findings(results: dict[str, Any]) -> list[str]:
    return _sdk_findings(results) + _profile_findings(results) + _memory_findings(results)
