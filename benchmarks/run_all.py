"""Run every benchmark scenario in one go and write docs/benchmarks.md.

    .venv/bin/python -m benchmarks.run_all            # full run: 10 to 20 minutes on 2 cores
    .venv/bin/python -m benchmarks.run_all --quick    # one short repeat of everything: about 4 minutes

Everything listens on 127.0.0.1 or on Unix sockets under /tmp, and every load stops by itself.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.bridge_configs import mock_config
from benchmarks.notes import standing_notes
from benchmarks.plot import plot_sweep
from benchmarks.profiling import profile_bridge
from benchmarks.report import render
from benchmarks.scenario_local import SHIPPED_THREADS, local_tokens
from benchmarks.scenarios import Plan, memory_soak, reload_under_load, rss_mb, sdk_floor, sweep
from benchmarks.servers import (
    REPO,
    Server,
    litellm_venv,
    litellm_version,
    mock_port,
    start_bare_proxy,
    start_bridge,
    start_litellm,
    start_mock,
    unix_get,
)
from benchmarks.targets import FULL

SCENARIOS = ("sweep", "memory", "reload", "profile", "local")


DEFAULT_DOC = REPO / "docs" / "benchmarks.md"
DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "latest.json"
SCRATCH_DIR = REPO / "benchmarks" / "results" / "scratch"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the bridge benchmarks and write docs/benchmarks.md.")
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 s per point, 5,000-request soak, 2 local runs")
    parser.add_argument("--repeats", type=int, help="runs of each sweep point (default 3; --quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per sweep point (default 5; --quick 2)")
    parser.add_argument("--soak-requests", type=int, help="requests in the memory soak (default 100,000, the target; --quick 5,000)")
    parser.add_argument("--local-runs", type=int, help="generations per side in the local model scenario (default 7; --quick 2)")
    parser.add_argument("--local-max-tokens", type=int, default=128, help="max_tokens of each local generation")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out even when its venv exists")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC,
                        help="Markdown report to write (a partial run without --update writes to benchmarks/results/scratch/)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="raw results to write as JSON")
    parser.add_argument("--report-only", type=Path, metavar="RESULTS_JSON", help="rewrite the report from saved results")
    parser.add_argument("--update", type=Path, metavar="RESULTS_JSON",
                        help="start from saved results and replace only the scenarios this run measures (see --only)")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        repeats=args.repeats or (1 if quick else 3),
        seconds=args.seconds or (2.0 if quick else 5.0),
        concurrencies=(1, 32, 128),
        stream_concurrencies=(1, 32),
        soak_requests=args.soak_requests or (5_000 if quick else 100_000),
        soak_segments=10,
        soak_concurrency=32,
        reloads=10,
        reload_interval=1.0,
        local_runs=args.local_runs or (2 if quick else 7),
        local_max_tokens=args.local_max_tokens,
        profile_seconds=5.0 if quick else 10.0,
    )


def _start_sweep_servers(workdir: Path, mock: Server, with_litellm: bool, results: dict[str, Any]) -> list[Server]:
    port = mock_port(mock)
    servers = [mock, start_bare_proxy(workdir, mock),
               start_bridge(workdir, "plain", mock_config(port, features=False)),
               start_bridge(workdir, "full", mock_config(port, features=True))]
    venv = litellm_venv()
    if not with_litellm:
        results["litellm"] = {"available": False, "reason": "left out with --no-litellm"}
    elif venv is None:
        results["litellm"] = {"available": False, "reason": "no LiteLLM virtual environment at benchmarks/.litellm-venv "
                              "or $SAGE_BENCH_LITELLM_VENV (see the Notes for how to create one)"}
    else:
        try:
            servers.append(start_litellm(workdir, venv, mock))
            results["litellm"] = {"available": True, "version": litellm_version(venv), "venv": str(venv)}
        except (RuntimeError, TimeoutError) as exc:
            results["litellm"] = {"available": False, "reason": f"LiteLLM did not start: {str(exc).splitlines()[0]}"}
    if not results["litellm"]["available"]:
        print(f"LiteLLM skipped: {results['litellm']['reason']}", flush=True)
    return servers


def _features(workdir: Path, full: Server) -> dict[str, Any]:
    """Check which features the full bridge really exercised: ledger rows and a metrics endpoint."""
    features: dict[str, Any] = {"log_level": "INFO"}
    try:
        features["metrics_status"] = unix_get(full.target, "/metrics")[0]
    except OSError as exc:
        features["metrics_status"] = f"failed: {exc}"
    ledger = workdir / "bridge-full" / "state" / "ledger.sqlite3"
    if ledger.exists():
        try:
            with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as connection:
                features["ledger_rows"] = connection.execute("SELECT count(*) FROM requests").fetchone()[0]
        except sqlite3.Error as exc:
            features["ledger_rows"] = f"unreadable: {exc}"
    return features


def run_sweeps(workdir: Path, mock: Server, plan: Plan, with_litellm: bool, results: dict[str, Any]) -> None:
    servers = _start_sweep_servers(workdir, mock, with_litellm, results)
    try:
        time.sleep(1.0)
        idle: dict[str, dict[str, float | None]] = {s.name: {"start": rss_mb(s)} for s in servers}
        print("non-streaming sweep", flush=True)
        json_sweep = sweep(servers, plan.concurrencies, plan, stream=False)
        print("streaming sweep", flush=True)
        stream_servers = [s for s in servers if "plain" not in s.name]
        stream_sweep = sweep(stream_servers, plan.stream_concurrencies, plan, stream=True)
        time.sleep(2.0)
        for server in servers:
            idle[server.name]["after_sweeps"] = rss_mb(server)
        results["sweeps"] = {"json": json_sweep, "stream": stream_sweep}
        print("openai SDK client straight to the mock", flush=True)
        results["sdk_client"] = sdk_floor(mock, plan)
        results["idle_rss"] = idle
        full = next(s for s in servers if s.name == FULL)
        results["features"] = _features(workdir, full)
    finally:
        for server in servers[1:]:
            server.process.stop()


def _guarded(results: dict[str, Any], key: str, scenario: Callable[[], Any], checkpoint: Path) -> None:
    """Run one scenario; a server that fails to start or dies costs that scenario, not the run.

    The results so far are saved to `checkpoint` afterwards, so a crash later keeps them."""
    try:
        value = scenario()
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        print(f"scenario {key} failed: {message}", flush=True)
        results.setdefault("failures", {})[key] = message[-2000:]
    else:
        if value is not None:
            results[key] = value
        results.get("failures", {}).pop(key, None)  # a failure of an earlier run, now measured
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(json.dumps(results, indent=1))


def _fresh_results(plan: Plan) -> dict[str, Any]:
    return {
        "plan": asdict(plan),
        "machine": machine.machine(),
        "versions": machine.versions(),
        "litellm": {"available": False, "reason": "the sweep was not run"},
        "invocations": [],
        "notes": [],
    }


def _previous_results(path: Path) -> dict[str, Any]:
    """Load saved results to update; results saved before invocations were recorded get one."""
    results: dict[str, Any] = json.loads(path.read_text())
    if "invocations" not in results:
        results["invocations"] = [{
            "command": results.pop("command"), "started": results.pop("started"), "finished": results.pop("finished"),
            "minutes": results.pop("wall_seconds") / 60, "scenarios": list(SCENARIOS),
            "load_average": f"{results['machine']['load_average_at_start']} / {results.pop('load_average_at_end')}",
            "bridge_commit": results["versions"]["bridge commit"],
        }]
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = build_plan(args)
    checkpoint = args.results.with_suffix(".partial.json")
    chosen = [scenario for scenario in SCENARIOS if scenario in (args.only or SCENARIOS)]
    results = _previous_results(args.update) if args.update else _fresh_results(plan)
    invocation: dict[str, Any] = {
        "command": " ".join([".venv/bin/python -m benchmarks.run_all", shlex.join(sys.argv[1:])]).rstrip(),
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "scenarios": chosen,
        "bridge_commit": machine.bridge_commit(),
        "plan": asdict(plan),
    }
    load_at_start = machine.load_average()
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    print(f"work directory (logs, configs, py-spy output): {workdir}", flush=True)
    mock = start_mock(workdir)
    try:
        if "sweep" in chosen:
            _guarded(results, "sweeps", lambda: run_sweeps(workdir, mock, plan, not args.no_litellm, results), checkpoint)
        if "memory" in chosen:
            print("memory soak", flush=True)
            _guarded(results, "memory", lambda: memory_soak(workdir, mock, plan), checkpoint)
        if "reload" in chosen:
            print("reload under load", flush=True)
            _guarded(results, "reload", lambda: reload_under_load(workdir, mock, plan), checkpoint)
        if "profile" in chosen:
            print("profile", flush=True)
            _guarded(results, "profile", lambda: profile_bridge(workdir, mock, plan.profile_seconds), checkpoint)
    finally:
        mock.process.stop()
    if "local" in chosen:
        print("local model", flush=True)
        # One thread as well as the shipped two: on 2 cores, two llama.cpp threads compete with the
        # bridge's event loop, and one thread shows how much of a gap that competition explains.
        _guarded(results, "local", lambda: [local_tokens(workdir, plan.local_runs, plan.local_max_tokens, threads)
                                            for threads in (SHIPPED_THREADS, 1)], checkpoint)

    invocation["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    invocation["minutes"] = (time.time() - started) / 60
    invocation["load_average"] = f"{load_at_start} / {machine.load_average()}"
    invocation["workdir"] = str(workdir)
    results["invocations"].append(invocation)
    return results


def write_outputs(results: dict[str, Any], doc: Path, results_path: Path) -> None:
    """Save the raw results first, so a report that fails to render loses no measurement."""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1))
    print(f"wrote {results_path}", flush=True)

    results["notes"] = standing_notes(results)
    plot_name = None
    if "json" in results.get("sweeps", {}):
        plot_path = doc.with_name("benchmarks-latency.png")
        plot_sweep(results["sweeps"]["json"], plot_path,
                   f"Non-streaming chat requests, {results['machine']['cores']} cores, medians of {results['plan']['repeats']} runs")
        plot_name = plot_path.name
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, plot_name))
    print(f"wrote {doc}", flush=True)


def _keep_committed_report(args: argparse.Namespace) -> None:
    """Send a partial run's outputs (--only or --quick without --update) to a scratch folder, so
    that they do not replace the committed report with one that lacks scenarios or repeats."""
    partial = bool(args.only or args.quick) and not args.update and not args.report_only
    if partial and args.doc == DEFAULT_DOC and args.results == DEFAULT_RESULTS:
        args.doc = SCRATCH_DIR / "benchmarks.md"
        args.results = SCRATCH_DIR / "results.json"
        print(f"partial run: writing {args.doc} and {args.results}; to merge it into the committed report, "
              f"run with --update {DEFAULT_RESULTS.relative_to(REPO)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _keep_committed_report(args)
    if args.report_only:
        results = _previous_results(args.report_only)
    else:
        results = run(args)
    write_outputs(results, args.doc, args.results)
    args.results.with_suffix(".partial.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
