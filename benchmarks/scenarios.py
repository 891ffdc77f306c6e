"""HTTP scenarios against the mock upstream: concurrency sweeps, memory soak, reload under load.

Each scenario returns JSON-ready dicts; report.py turns them into tables and verdicts.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.bridge_configs import mock_config
from benchmarks.loadgen import LoadResult, LoadSpec, collect_load_process, run_load_process, start_load_process
from benchmarks.processes import catches_signal, status_kb, tree_rss_mb
from benchmarks.sdk_client import run_process as run_sdk_process
from benchmarks.servers import Server, bridge_files, bridge_status, mock_port, start_bridge
from benchmarks.stats import median

UNBOUNDED_COUNT = 10_000_000  # a request cap no timed run reaches; the duration ends it
SETTLE_SECONDS = 2.0  # idle time before an "at idle" memory reading


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of each scenario to run; run_all.py builds it from the command line."""

    repeats: int  # runs of each sweep point; the report shows medians
    seconds: float  # measured seconds of one sweep point
    concurrencies: tuple[int, ...]
    stream_concurrencies: tuple[int, ...]
    soak_requests: int
    soak_segments: int
    soak_concurrency: int
    reloads: int
    reload_interval: float  # seconds between two config changes
    local_runs: int
    local_max_tokens: int
    profile_seconds: float


def point_median(runs: list[LoadResult]) -> dict[str, Any]:
    """Median over repeated runs of one (server, concurrency) point; errors are summed."""
    errors: dict[str, int] = {}
    for run in runs:
        for kind, count in run.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    return {
        "rps": median([run.rps for run in runs]),
        "p50": median([run.latency_ms["p50"] for run in runs]),
        "p90": median([run.latency_ms["p90"] for run in runs]),
        "p99": median([run.latency_ms["p99"] for run in runs]),
        "ttft_p50": median([run.ttft_ms["p50"] for run in runs]),
        "bridge_overhead_p50": median([run.bridge_overhead_ms["p50"] for run in runs]),
        "ttft_p90": median([run.ttft_ms["p90"] for run in runs]),
        "chunks_per_stream": median([run.chunks_per_stream for run in runs]),
        "chunks_per_second": median([run.chunks_per_second for run in runs]),
        "requests": sum(run.ok for run in runs),
        "errors": errors,
        "runs": len(runs),
    }


def sweep(servers: list[Server], concurrencies: tuple[int, ...], plan: Plan, *, stream: bool) -> dict[str, dict[str, Any]]:
    """Load every server at every concurrency, `plan.repeats` times, interleaved so that a noisy
    minute on the shared machine hits all servers rather than one."""
    runs: dict[str, dict[int, list[LoadResult]]] = {server.name: {c: [] for c in concurrencies} for server in servers}
    for repeat in range(plan.repeats):
        for concurrency in concurrencies:
            for server in servers:
                spec = LoadSpec(
                    target=server.target, concurrency=concurrency, requests=UNBOUNDED_COUNT, duration=plan.seconds,
                    stream=stream, warmup=max(20, 4 * concurrency), headers=server.headers,
                )
                result = run_load_process(spec)
                runs[server.name][concurrency].append(result)
                print(f"  [{repeat + 1}/{plan.repeats}] {server.name:22} c={concurrency:<4} stream={stream!s:5} "
                      f"{result.rps:8.0f} rps  p50 {result.latency_ms['p50'] or 0:8.2f} ms  errors {result.errors}", flush=True)
    return {
        name: {str(c): {"median": point_median(results), "runs": [asdict(r) for r in results]} for c, results in points.items()}
        for name, points in runs.items()
    }


def rss_mb(server: Server) -> float | None:
    return tree_rss_mb(server.process.pid)


def memory_soak(workdir: Path, mock: Server, plan: Plan) -> dict[str, Any]:
    """Start a fresh bridge with every feature on, read its idle memory, then send
    plan.soak_requests requests in segments and read its memory after each one."""
    bridge = start_bridge(workdir, "soak", mock_config(mock_port(mock), features=True))
    try:
        time.sleep(SETTLE_SECONDS)
        idle_start = rss_mb(bridge)
        per_segment = math.ceil(plan.soak_requests / plan.soak_segments)
        samples: list[dict[str, Any]] = []
        done = 0
        errors: dict[str, int] = {}
        started = time.perf_counter()
        for _ in range(plan.soak_segments):
            spec = LoadSpec(target=bridge.target, concurrency=plan.soak_concurrency, requests=per_segment, duration=900.0)
            result = run_load_process(spec)
            done += result.ok
            for kind, count in result.errors.items():
                errors[kind] = errors.get(kind, 0) + count
            samples.append({"requests": done, "rss_mb": rss_mb(bridge), "rps": result.rps, "p50": result.latency_ms["p50"]})
            print(f"  soak: {done} requests, RSS {samples[-1]['rss_mb']:.1f} MiB", flush=True)
        elapsed = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        return {
            "idle_start_mb": idle_start,
            "idle_end_mb": rss_mb(bridge),
            "peak_mb": _peak_mb(bridge),
            "samples": samples,
            "requests": done,
            "requests_planned": plan.soak_requests,
            "concurrency": plan.soak_concurrency,
            "errors": errors,
            "seconds": elapsed,
            # The first segment is the warm-up: caches, pools and the allocator's arenas fill there.
            "growth_mb": (samples[-1]["rss_mb"] - samples[0]["rss_mb"]) if len(samples) > 1 else None,
        }
    finally:
        bridge.process.stop()


def _peak_mb(server: Server) -> float | None:
    peak = status_kb(server.process.pid, "VmHWM")
    return peak / 1024 if peak is not None else None


def reload_under_load(workdir: Path, mock: Server, plan: Plan) -> dict[str, Any]:
    """Change bridge.yaml `plan.reloads` times while a load runs, once with file changes alone (the
    daemon's file watcher) and once with SIGHUP after each change, then count failed requests and
    the reloads the daemon reported."""
    return {mode: _reload_run(workdir, mock, plan, mode) for mode in ("file", "sighup")}


def _reload_run(workdir: Path, mock: Server, plan: Plan, mode: str) -> dict[str, Any]:
    port = mock_port(mock)
    label = f"reload-{mode}"
    bridge = start_bridge(workdir, label, mock_config(port, features=True))
    config_path = bridge_files(workdir, label).config
    try:
        sighup = catches_signal(bridge.process.pid, signal.SIGHUP)
        duration = plan.reloads * plan.reload_interval + 3.0
        spec = LoadSpec(target=bridge.target, concurrency=32, requests=UNBOUNDED_COUNT, duration=duration, warmup=100)
        load = start_load_process(spec)
        time.sleep(2.0)  # past the warm-up, so every change lands on the measured phase
        observations = [_config_identity(bridge_status(bridge))]
        for index in range(1, plan.reloads + 1):
            # Rewritten in place, as an editor or `touch` would; each version differs in the budget cap.
            config_path.write_text(mock_config(port, features=True, marker=f"change {index}").replace(
                "usd: 1000000,", f"usd: {1000000 + index},"))
            # Without a handler, SIGHUP's default action would kill the daemon, so it is sent only when caught.
            if mode == "sighup" and sighup:
                os.kill(bridge.process.pid, signal.SIGHUP)
            time.sleep(plan.reload_interval)
            observations.append(_config_identity(bridge_status(bridge)))
        result = collect_load_process(load, spec)
        alive = bridge.process.alive()
        log = bridge.process.log_path.read_text(errors="replace") if bridge.process.log_path.exists() else ""
        return {
            "mode": mode,
            "changes": plan.reloads,
            "sighup_caught": sighup,
            "reloads_observed": len({item for item in observations if item is not None}) - 1,
            "daemon_alive": alive,
            "load": asdict(result),
            "failed_requests": sum(result.errors.values()),
            "reload_log_lines": _reload_lines(log),
        }
    finally:
        bridge.process.stop()


def _reload_lines(log: str) -> list[str]:
    """Return the last log lines about reloading; paths are ignored, since the work directory is named reload."""
    return [line for line in log.splitlines() if "reload" in re.sub(r"/\S+", "", line).lower()][-12:]


def _config_identity(status: dict[str, Any] | None) -> str | None:
    if status is None:
        return None
    config = status.get("config", {})
    return f"{config.get('sha256')}@{config.get('loaded_at')}"


def sdk_floor(mock: Server, plan: Plan) -> dict[str, dict[str, Any]]:
    """Load the mock with the openai SDK client alone, the client the bridge's openai provider uses."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {"json": {}, "stream": {}}
    for repeat in range(plan.repeats):
        for concurrency in plan.stream_concurrencies:
            for label, stream in (("json", False), ("stream", True)):
                result = run_sdk_process(mock.target + "/v1", concurrency, plan.seconds, stream)
                runs[label].setdefault(concurrency, []).append(result)
                print(f"  [{repeat + 1}/{plan.repeats}] openai SDK client      c={concurrency:<4} stream={stream!s:5} "
                      f"{result['rps']:8.0f} rps  p50 {result['latency_ms']['p50'] or 0:8.2f} ms", flush=True)
    return {
        label: {
            str(concurrency): {
                "rps": median([run["rps"] for run in results]),
                "p50": median([run["latency_ms"]["p50"] for run in results]),
                "p99": median([run["latency_ms"]["p99"] for run in results]),
                "errors": sum(sum(run["errors"].values()) for run in results),
            }
            for concurrency, results in points.items()
        }
        for label, points in runs.items()
    }
