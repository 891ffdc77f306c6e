"""The record of optimisations to the request path, each with its effect as measured at the time.

The first four entries compare the `benchmarks.run_all` sweep before the change with the one after
it, on the 2-core benchmark machine. Their figures are full-feature throughput at concurrency 32
and added latency at concurrency 1, each next to the bare proxy of the same run.

The later entries compare two builds of the bridge, before and after the change. Both were
started side by side with every feature on and loaded in turn, 3 or 4 runs of 3 s each. Their
figures are main-thread CPU per request at concurrency 32, read from /proc so that the load
generator's share of the machine does not count, and median latency at concurrency 1.
"""

from __future__ import annotations

OPTIMISATIONS: list[tuple[str, str, str]] = [
    (
        "Chat and streaming chat go to OpenAI-compatible upstreams over one pooled aiohttp session per "
        "provider instead of the openai SDK (commit \"Send OpenAI chat over a pooled aiohttp session\").",
        "The SDK's per-request transforms and httpx2/httpcore2 connection checks took about 57 % of the "
        "GIL-holding samples; alone the SDK client reached 0.16x the bare proxy.",
        "377 -> 1,561 req/s (0.08x -> 0.36x the bare proxy's 4,519 and 4,395); added latency 2.24 -> 0.89 ms; "
        "added time to first token 3.83 -> 0.76 ms.",
    ),
    (
        "The ledger syncs with `synchronous=NORMAL` by default: a committed row survives `kill -9` without an "
        "fsync per group commit (`server.ledger_sync: FULL` restores the fsync).",
        "At concurrency 1 every request waited for its own fsync.",
        "Measured together with the change above.",
    ),
    (
        "A route's enabled targets are computed once when the graph is compiled.",
        "`Route.enabled_targets` was 1.6-1.9 % of samples.",
        "Below the noise of a single run.",
    ),
    (
        "The daemon runs on uvloop, JSON responses and upstream bodies use orjson, and the ledger writer "
        "wakes the event loop once per batch instead of once per row.",
        "After the aiohttp switch the event loop, JSON and small per-request steps dominated the profile.",
        "1,561 -> 1,785 req/s at concurrency 32 (0.36x -> 0.40x the bare proxy), 14.9x LiteLLM. Added "
        "latency at concurrency 1 stayed within noise: 0.89 -> 0.98 ms, while the bare proxy's moved "
        "0.34 -> 0.45 ms between the two runs.",
    ),
    (
        "Non-streamed chat requests go through a keep-alive HTTP/1.1 pool with a pre-built request head and "
        "httptools' C parser (`providers/http_pool.py`); streams stay on aiohttp.",
        "On its own against the mock, aiohttp's client used 77-92 us of CPU per request and the pool 39 us. "
        "In the daemon it cost more than routing, budgets and the ledger together.",
        "Main-thread CPU 542 -> 370 us per request; 1,840 -> 2,608 req/s at concurrency 32.",
    ),
    (
        "Request and completion ids come from a seeded Mersenne Twister instead of os.urandom; a Unix "
        "socket peer's credentials are read once per connection; ledger times use isoformat.",
        "Each request made two getrandom system calls and one SO_PEERCRED getsockopt.",
        "Main-thread CPU 374 -> 322 us per request.",
    ),
    (
        "A log line's message is formatted once, its time text once per second, and the lines of one "
        "event-loop pass are written in one call after the responses.",
        "Logging at WARNING instead of INFO lowered main-thread CPU by about 50 us per request.",
        "Main-thread CPU 343 -> 326 us per request; median latency at concurrency 1 1.202 -> 1.173 ms.",
    ),
    (
        "Request bodies without a 19-digit run or a surrogate escape are parsed with orjson; the depth "
        "check walks level by level. Other bodies, and those orjson rejects, keep the careful parser.",
        "The standard parser called back into Python for every number.",
        "Main-thread CPU 327 -> 299 us per request.",
    ),
    (
        "Lending the graph and admitting a request use a plain class and a plain coroutine instead of "
        "contextlib generators; recording a ledger row takes no lock.",
        "The generator context managers and the lock shared with the writer thread ran on every request.",
        "Main-thread CPU 312 -> 295 us per request; median latency at concurrency 1 1.132 -> 1.098 ms.",
    ),
    (
        "Log records skip the caller, thread, process and task lookups that neither log format prints.",
        "The logging HOWTO lists these switches; a request's line took 12.4 us in a loop, 10.1 us after.",
        "Within the noise in the daemon.",
    ),
    (
        "The metrics and the log line of a JSON answer run in a callback after aiohttp has written the response.",
        "They ran between the ledger commit and the response write.",
        "Median latency at concurrency 1 1.127 -> 1.023 ms.",
    ),
    (
        "A request's ledger row is queued before its budget and limiter charges run.",
        "The charges do not depend on the row, so they can run while the writer thread commits it.",
        "Within the noise: median latency at concurrency 1 1.082 -> 1.073 ms.",
    ),
]


def render_optimisations() -> list[str]:
    lines = ["## Optimisations", "", "| change | why | measured effect |", "| --- | --- | --- |"]
    lines += [f"| {change} | {why} | {effect} |" for change, why, effect in OPTIMISATIONS]
    return lines + [""]
