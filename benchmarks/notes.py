"""Standing notes for the report: how to reproduce, and what the numbers do not show."""

from __future__ import annotations

from typing import Any

from benchmarks.targets import SOAK_TARGET


def standing_notes(results: dict[str, Any]) -> list[str]:
    notes = [
        "LiteLLM runs from its own virtual environment, never the project's: `benchmarks/setup_litellm.sh` "
        "creates `benchmarks/.litellm-venv`, or `SAGE_BENCH_LITELLM_VENV` names another one. It is started with "
        "`--num_workers 1`, a throwaway master key (it does not start without one), "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True` and telemetry off, so it makes no outbound calls.",
        "Reference figures from the team, measured on these 2-core machines on 2026-12-04 with the same mock "
        "and load generator (not from this run): the bare proxy served about 4,450 req/s at concurrency 32 "
        "(p50 7.1 ms) and added about 0.5 ms at concurrency 1; LiteLLM 1.110 (one worker; this run's version is "
        "under Setup) served about "
        "122 req/s at concurrency 32 (p50 251 ms), added about 7.5 ms at concurrency 1 and held 380 MB. "
        "The targets are checked only against ratios measured within this run.",
        "The bridge runs on uvloop, its default; the bare proxy and LiteLLM run as they ship (the bare proxy on "
        "asyncio's own loop). With the bridge on asyncio's loop as well (`SAGE_BRIDGE_EVENT_LOOP=asyncio make "
        "bench`), a separate check on 2026-12-04 measured 0.61x the bare proxy's throughput at concurrency 32 "
        "and 1.85x its added latency at concurrency 1, so the targets do not depend on uvloop.",
        "matplotlib and py-spy are benchmark-only packages (the `bench` extra); the daemon never imports them.",
        "The load generator is Python (aiohttp client, one process, keep-alive); it spends CPU on the same "
        "2 cores as the servers, which caps the fastest paths (the mock and the bare proxy) more than the bridge.",
        "Raw results, with every run of every point, are in `benchmarks/results/latest.json`; "
        "`python -m benchmarks.run_all --report-only benchmarks/results/latest.json` rewrites this page from them.",
    ]
    memory = results.get("memory")
    if memory and memory["requests"] < SOAK_TARGET:
        notes.append(
            f"The soak ran {memory['requests']:,} requests, fewer than the {SOAK_TARGET:,} of the target; run "
            f"`--soak-requests {SOAK_TARGET}` for the full check."
        )
    return notes
