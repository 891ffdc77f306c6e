"""Write docs/benchmarks.md from one run's results."""

from __future__ import annotations

from typing import Any

from benchmarks.findings import findings
from benchmarks.optimisations import render_optimisations
from benchmarks.targets import BARE, DIRECT, FULL, GROWTH_TOLERANCE_MB, LITELLM, PLAIN, added_ms, evaluate


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "0"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _verdicts(results: dict[str, Any]) -> list[str]:
    rows = [[v.name, v.target, v.measured, f"**{v.status}**"] for v in evaluate(results)]
    return ["## Targets", "", *_table(["target", "goal", "measured (medians)", "result"], rows)]


def _findings(results: dict[str, Any]) -> list[str]:
    found = findings(results)
    if not found:
        return []
    return ["## What limits the bridge", "", *[f"- {line}" for line in found], ""]


def _setup(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    versions = results["versions"]
    plan = results["plan"]
    litellm = results["litellm"]
    peer = f"LiteLLM {litellm['version']}" if litellm.get("available") else f"LiteLLM skipped: {litellm.get('reason')}"
    lines = [
        "## Setup",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {_number(machine['memory_gib'])} GiB memory, "
        f"Linux {machine['kernel']}.",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + f"; {peer}.",
        *_invocations(results["invocations"]),
        *([f"- Each sweep point ran {plan['repeats']} times for {plan['seconds']:.0f} s (after a warm-up of "
           "max(20, 4 x concurrency) requests); tables show the median of the runs, and errors summed over them."]
          if results.get("sweeps") else []),
        "",
        "Processes: the mock upstream, the server under test and the load generator are three separate "
        "processes, all on the same 2 cores and left to the kernel's scheduler. In a trial on this machine, "
        "pinning the server to one core and the client and mock to the other lowered the bare proxy's "
        "throughput by 15-30 %, because the Python load generator and the mock then saturated their core. So every "
        "number here includes competition for CPU from the load generator and the mock, and the machine "
        "is shared with other work. The ratios between servers, measured in the same run with "
        "interleaved repeats, are the meaningful figures; absolute numbers are lower than a dedicated "
        "machine or a native load generator (wrk, oha) would give.",
        "",
        "The mock upstream responds at once (no added delay) with 16 content tokens; requests set "
        "`max_tokens: 16`. The bridge and the bare proxy listen on Unix sockets; LiteLLM and the mock "
        "listen on TCP 127.0.0.1, so each path has one TCP hop to the mock and the client leg differs "
        "only in socket type. \"Added\" latency is a server's median minus the median of the load "
        "generator talking to the mock directly, at concurrency 1.",
        "",
        "Bridge configurations: *plain* is one `openai` deployment on the mock (`terminal: none`); *full* "
        "adds a price, rpm and tpm limits far above the load, a global USD budget "
        "(`{scope: global, usd: 1000000, per: day}`) and admission limits. The ledger records every request "
        "in both.",
        "",
    ]
    return lines + _features(results.get("features", {}))


def _invocations(invocations: list[dict[str, Any]]) -> list[str]:
    lines = []
    for invocation in invocations:
        lines.append(
            f"- Command: `{invocation['command']}`, {invocation['started']} to {invocation['finished']} "
            f"({_number(invocation['minutes'])} minutes; load average {invocation['load_average']} at start / end; "
            f"scenarios: {', '.join(invocation['scenarios'])}; bridge {invocation['bridge_commit']})."
        )
    if len(invocations) > 1:
        lines.append("- Each scenario's numbers come from the last command that ran it; the ratios inside one "
                     "scenario were always measured in one command.")
    return lines


def _features(features: dict[str, Any]) -> list[str]:
    if not features:
        return []
    return [
        f"Features seen in the full bridge after the sweeps: ledger rows {features.get('ledger_rows', 'n/a')}, "
        f"`GET /metrics` status {features.get('metrics_status', 'n/a')}, "
        f"log level {features.get('log_level', 'INFO')} (one INFO line per request, as shipped).",
        "",
    ]


def _sweep_table(sweep: dict[str, dict[str, Any]], stream: bool) -> list[str]:
    rows: list[list[str]] = []
    for name, points in sweep.items():
        for concurrency in sorted(points, key=int):
            m = points[concurrency]["median"]
            row = [name, concurrency, _number(m["rps"], 0), _number(m["p50"], 2), _number(m["p90"], 2), _number(m["p99"], 2)]
            if stream:
                row += [_number(m["ttft_p50"], 2), _number(m["chunks_per_second"], 0)]
            rows.append(row + [_errors(m["errors"])])
    header = ["server", "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms"]
    if stream:
        header += ["TTFT p50 ms", "chunks/s"]
    return _table(header + ["errors"], rows)


def _added(results: dict[str, Any]) -> list[str]:
    rows = []
    for name in (BARE, PLAIN, FULL, LITELLM):
        latency = added_ms(results, "json", name, "p50")
        ttft = added_ms(results, "stream", name, "ttft_p50")
        if latency is None and ttft is None:
            continue
        point = results["sweeps"]["json"].get(name, {}).get("1", {}).get("median", {})
        rows.append([name, _number(latency, 2), _number(ttft, 2), _number(point.get("bridge_overhead_p50"), 2)])
    return ["### Added latency at concurrency 1", "",
            "The last column is the median of the bridge's own `x-bridge-overhead-ms` header (time in the bridge, "
            "upstream time excluded), for comparison with the measured difference.", "",
            *_table(["server", "added p50 latency ms", "added p50 TTFT ms", "x-bridge-overhead-ms p50"], rows)]


def _sdk_client(results: dict[str, Any]) -> list[str]:
    sdk = results.get("sdk_client")
    if not sdk:
        return []
    sweeps = results.get("sweeps", {})
    rows = []
    for label, stream_text in (("json", "JSON"), ("stream", "SSE")):
        for concurrency, point in sdk[label].items():
            direct = sweeps.get(label, {}).get(DIRECT, {}).get(concurrency, {}).get("median", {})
            rows.append([stream_text, concurrency, _number(direct.get("rps"), 0), _number(direct.get("p50"), 2),
                         _number(point["rps"], 0), _number(point["p50"], 2), str(point["errors"])])
    return [
        "### The upstream client alone",
        "",
        "The bridge's `openai` provider first sent chat through `openai.AsyncOpenAI` (httpx2 underneath), and still "
        "sends embeddings through it. Here that client runs alone in its own process against the mock, next to the "
        "aiohttp load generator on the same path. Its request rate at concurrency 32 capped chat through the SDK "
        "on this machine, whatever the rest of the bridge cost, which is why chat now uses the bridge's own "
        "HTTP clients.",
        "",
        *_table(["body", "concurrency", "aiohttp client req/s", "aiohttp p50 ms", "openai SDK req/s", "openai SDK p50 ms",
                 "SDK errors"], rows),
    ]


def _memory(results: dict[str, Any]) -> list[str]:
    lines = ["## Memory", ""]
    idle = results.get("idle_rss", {})
    if idle:
        rows = [[name, _number(values.get("start")), _number(values.get("after_sweeps"))] for name, values in idle.items()]
        lines += ["Resident memory (VmRSS, the process and its children) of the sweep servers:", "",
                  *_table(["server", "MiB after start", "MiB idle after the sweeps"], rows)]
    memory = results.get("memory")
    if not memory:
        return lines
    lines += [
        f"Soak: a fresh full bridge, {memory['requests']:,} requests (planned {memory['requests_planned']:,}) at "
        f"concurrency {memory['concurrency']} in {len(memory['samples'])} segments, {_number(memory['seconds'], 0)} s; "
        f"errors: {_errors(memory['errors'])}. Idle at start {_number(memory['idle_start_mb'])} MiB, idle at the end "
        f"{_number(memory['idle_end_mb'])} MiB, peak (VmHWM) {_number(memory['peak_mb'])} MiB. Growth is measured "
        f"from the end of the first segment (the warm-up) to the end; up to {GROWTH_TOLERANCE_MB:.0f} MiB counts as none.",
        "",
        *_table(["requests done", "RSS MiB", "segment req/s"],
                [[f"{s['requests']:,}", _number(s["rss_mb"]), _number(s["rps"], 0)] for s in memory["samples"]]),
    ]
    return lines


def _reload(results: dict[str, Any]) -> list[str]:
    reload = results.get("reload")
    if not reload:
        return []
    lines = [
        "## Reload under load",
        "",
        "bridge.yaml of a fresh full bridge was rewritten in place 10 times, once a second (each version with a "
        "different budget cap), while 32 clients sent requests: once with the file changes alone, for the "
        "daemon's file watcher, and once with SIGHUP sent after each change (only when /proc shows a SIGHUP "
        "handler, because the default action would kill the daemon). A reload counts as seen when "
        "`/admin/status` shows a new config digest and load time.",
        "",
    ]
    rows = []
    for run in reload.values():
        load = run["load"]
        rows.append([run["mode"], "yes" if run["sighup_caught"] else "no", f"{load['ok']:,}", str(run["failed_requests"]),
                     _errors(load["errors"]), _number(load["rps"], 0), _number(load["latency_ms"]["p99"]),
                     str(run["reloads_observed"]), str(run["daemon_alive"])])
    lines += _table(["changes by", "SIGHUP handler", "succeeded", "failed", "errors", "req/s", "p99 ms",
                     "reloads seen", "daemon alive"], rows)
    for run in reload.values():
        if run["reload_log_lines"]:
            lines += [f"Last log lines about reloading ({run['mode']}):", "", "```", *run["reload_log_lines"][-3:], "```", ""]
    return lines


def _local(results: dict[str, Any]) -> list[str]:
    runs = results.get("local")
    if not runs:
        return []
    first = runs[0]
    rows = []
    for local in runs:
        for side, label in (("direct", "llama-cpp-python direct"), ("bridge", "through the bridge (SSE, Unix socket)")):
            s = local[side]
            rows.append([str(local["threads"]), label, _number(s["tokens_per_second"]), _number(s["decode_tokens_per_second"]),
                         _number(s["ttft_ms"]), _number(s["completion_tokens"], 0), _number(s["prompt_tokens"], 0)])
    same = all(local["same_text"] for local in runs)
    return [
        "## Local model tokens per second",
        "",
        f"SmolLM2-135M-Instruct Q4_1 (`{first['model']}`), context {first['context']}, greedy (temperature 0), "
        f"seed {first['seed']}, repeat_penalty 1.1, max_tokens {first['max_tokens']}; {first['runs']} alternating runs "
        "per side after one warm-up each; medians. Tokens per second is completion tokens over the time from the "
        "request to the last token; decode excludes the time to the first token. The target uses the 2 threads "
        f"of the default bridge.yaml. Both sides produced the same text in every run: {same}.",
        "",
        *_table(["threads", "side", "tokens/s", "decode tokens/s", "TTFT ms", "completion tokens", "prompt tokens"], rows),
    ]


def _profile(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile")
    if not profile:
        return []
    if "skipped" in profile:
        return ["## Profile", "", profile["skipped"], ""]
    lines = ["## Where the bridge spends its CPU", "",
             f"py-spy sampled the full bridge at {profile['rate']} Hz for {profile['seconds']:.0f} s at concurrency 32, "
             "all threads. Percentages are shares of all samples.", ""]
    for label, title in (("json", "JSON responses, all threads"), ("json-gil", "JSON responses, GIL holder only"),
                         ("stream", "SSE streams, all threads")):
        data = profile.get(label, {})
        if "error" in data or not data:
            lines += [f"### {title}", "", data.get("error", "not run"), ""]
            continue
        lines += [f"### {title} ({_number(data['rps'], 0)} req/s while sampled, {data['samples']} samples)", ""]
        if data.get("errors"):
            lines += [f"**Requests failed while this profile was taken ({_errors(data['errors'])}), so it shows "
                      "the failure path, not the normal one.**", ""]
        if data.get("threads"):
            lines += _table(["thread", "%"], [[t["name"], _number(t["percent"])] for t in data["threads"][:6]])
        lines += _table(["package (self time)", "%"], [[p["name"], _number(p["percent"])] for p in data["packages"][:10]])
        lines += _table(["function (self time)", "%", "most frequent callers"],
                        [[f"`{p['name']}`", _number(p["percent"]), _short_callers(p.get("caller", ""))]
                         for p in data["self"][:12]])
        lines += _table(["bridge function (inclusive)", "%"], [[f"`{p['name']}`", _number(p["percent"])] for p in data["inclusive"][:12]])
    return lines


def _short_callers(chain: str) -> str:
    """Drop the file part of each frame, so a caller chain fits in a table cell."""
    return " <- ".join(frame.split(" (", 1)[0] for frame in chain.split(" <- ")) if chain else ""


def _failures(results: dict[str, Any]) -> list[str]:
    failures = results.get("failures")
    if not failures:
        return []
    lines = ["## Scenarios that failed", ""]
    for key, message in failures.items():
        lines += [f"{key}:", "", "```", *message.splitlines()[-15:], "```", ""]
    return lines


def render(results: dict[str, Any], plot_name: str | None) -> str:
    sweeps = results.get("sweeps", {})
    lines = [
        "# Benchmarks",
        "",
        "Throughput, latency, streaming, memory, reload and local-model speed of the bridge, against a bare "
        "aiohttp pass-through proxy (the floor any Python proxy pays) and LiteLLM's proxy, all in one run on "
        "one machine. Regenerate this page with `make bench` (or `.venv/bin/python -m benchmarks.run_all`); "
        "`benchmarks/` holds the mock upstream, the load generator and the scenarios.",
        "",
        *_verdicts(results),
        *_findings(results),
        *_setup(results),
    ]
    if "json" in sweeps:
        lines += ["## Non-streaming requests", ""]
        if plot_name:
            lines += [f"![Latency and throughput against concurrency]({plot_name})", ""]
        lines += _sweep_table(sweeps["json"], stream=False)
    if "stream" in sweeps:
        lines += ["## Streaming requests", "",
                  "SSE with `stream_options.include_usage`; TTFT is the time to the first chunk with content.", "",
                  *_sweep_table(sweeps["stream"], stream=True)]
    if sweeps:
        lines += _added(results) + _sdk_client(results)
    lines += _memory(results) + _reload(results) + _local(results) + _profile(results) + _failures(results)
    lines += render_optimisations()
    lines += ["## Notes", "", *[f"- {note}" for note in results.get("notes", [])], ""]
    return "\n".join(lines).rstrip() + "\n"
