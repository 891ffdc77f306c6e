"""A closed-loop HTTP load generator over a Unix socket or TCP, run as its own process.

`concurrency` workers share one keep-alive connection pool and send requests back to back until
the request count or the duration runs out, whichever comes first. Every request records its
latency; streams also record the time to the first content chunk (TTFT) and their chunk count.

Run it alone: `python -m benchmarks.loadgen --target unix:/tmp/bridge.sock --concurrency 32
--requests 2000`. `run_load_process` runs it in a child process, so its CPU time is not
counted in the process that starts the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.stats import summarize

REPO = Path(__file__).resolve().parent.parent

DEFAULT_BODY: dict[str, Any] = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}


@dataclass(slots=True)
class LoadSpec:
    target: str  # "unix:/path/to.sock" or "http://127.0.0.1:PORT"
    concurrency: int
    requests: int  # upper bound on measured requests
    duration: float  # upper bound in seconds on the measured phase
    stream: bool = False
    body: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BODY))
    path: str = "/v1/chat/completions"
    warmup: int = 0  # requests sent first and not measured; they also open the connections
    timeout: float = 60.0  # seconds for one request
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class LoadResult:
    target: str
    concurrency: int
    stream: bool
    sent: int
    ok: int
    errors: dict[str, int]
    elapsed: float  # seconds of the measured phase
    rps: float  # successful requests per second
    latency_ms: dict[str, float | None]
    ttft_ms: dict[str, float | None]
    bridge_overhead_ms: dict[str, float | None]  # the bridge's own x-bridge-overhead-ms header
    chunks_per_stream: float | None
    chunks_per_second: float | None


@dataclass(slots=True)
class _Recorder:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0


class StreamIncomplete(Exception):
    """The SSE stream ended without `data: [DONE]`, or carried an error event."""


def _connector(target: str, limit: int) -> aiohttp.BaseConnector:
    if target.startswith("unix:"):
        return aiohttp.UnixConnector(path=target.removeprefix("unix:"), limit=limit)
    if target.startswith("http://127.0.0.1") or target.startswith("http://localhost") or target.startswith("http://[::1]"):
        return aiohttp.TCPConnector(limit=limit)
    raise ValueError(f"target {target!r}: use unix:/path/to.sock or http://127.0.0.1:PORT (loopback only)")


def _base_url(target: str) -> str:
    return "http://localhost" if target.startswith("unix:") else target.rstrip("/")


async def _read_stream(response: aiohttp.ClientResponse, started: float) -> tuple[float | None, int]:
    """Read an OpenAI SSE stream; return the seconds to the first content delta and the chunk count."""
    buffer = b""
    chunks = 0
    first_content: float | None = None
    done = False
    async for data in response.content.iter_any():
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if not event.startswith(b"data: "):
                continue  # comment lines are keep-alives
            payload = event[6:]
            if payload == b"[DONE]":
                done = True
                continue
            if payload.startswith(b'{"error"'):
                raise StreamIncomplete("error event")
            chunks += 1
            if first_content is None and _has_content(payload):
                first_content = time.perf_counter() - started
    if not done:
        raise StreamIncomplete("no [DONE]")
    return first_content, chunks


def _has_content(payload: bytes) -> bool:
    if b'"content"' not in payload:
        return False
    choices = json.loads(payload).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


async def _one_request(session: aiohttp.ClientSession, url: str, body: bytes, spec: LoadSpec, record: _Recorder | None) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json", **spec.headers}) as response:
            if spec.stream and response.status == 200:
                ttft, chunks = await _read_stream(response, started)
            else:
                await response.read()
                ttft, chunks = None, 0
            status = response.status
            overhead = response.headers.get("x-bridge-overhead-ms")
    except (aiohttp.ClientError, asyncio.TimeoutError, StreamIncomplete) as exc:
        if record is not None:
            record.errors[type(exc).__name__] += 1
        return
    if record is None:
        return
    if status != 200:
        record.errors[f"HTTP {status}"] += 1
        return
    record.latencies.append((time.perf_counter() - started) * 1000)
    if overhead is not None:
        record.overheads.append(float(overhead))
    if spec.stream:
        if ttft is not None:
            record.ttfts.append(ttft * 1000)
        record.chunks.append(chunks)


async def _phase(session: aiohttp.ClientSession, spec: LoadSpec, count: int, duration: float, record: _Recorder | None) -> float:
    url = _base_url(spec.target) + spec.path
    fields = {**spec.body, "stream": spec.stream}
    if spec.stream:
        fields.setdefault("stream_options", {"include_usage": True})  # as cost-tracking clients ask
    body = json.dumps(fields).encode()
    deadline = time.perf_counter() + duration
    tickets = iter(range(count))

    async def worker() -> None:
        # Both bounds stop every worker by itself: the tickets run out or the deadline passes.
        for _ in tickets:
            if time.perf_counter() >= deadline:
                return
            if record is not None:
                record.sent += 1
            await _one_request(session, url, body, spec, record)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return time.perf_counter() - started


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run the warm-up, then the measured phase, and summarize the measured requests."""
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    record = _Recorder()
    async with aiohttp.ClientSession(connector=_connector(spec.target, spec.concurrency), timeout=timeout) as session:
        if spec.warmup:
            await _phase(session, spec, spec.warmup, spec.duration, None)
        elapsed = await _phase(session, spec, spec.requests, spec.duration, record)

    ok = len(record.latencies)
    streams = len(record.chunks)
    return LoadResult(
        target=spec.target,
        concurrency=spec.concurrency,
        stream=spec.stream,
        sent=record.sent,
        ok=ok,
        errors=dict(record.errors),
        elapsed=elapsed,
        rps=ok / elapsed if elapsed > 0 else 0.0,
        latency_ms=summarize(record.latencies),
        ttft_ms=summarize(record.ttfts),
        bridge_overhead_ms=summarize(record.overheads),
        chunks_per_stream=sum(record.chunks) / streams if streams else None,
        chunks_per_second=sum(record.chunks) / elapsed if streams and elapsed > 0 else None,
    )


def start_load_process(spec: LoadSpec, python: str = sys.executable) -> subprocess.Popen[str]:
    """Start one load in a child process; `collect_load_process` waits for its result."""
    return subprocess.Popen(
        [python, "-m", "benchmarks.loadgen", "--spec-json", json.dumps(asdict(spec))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )


def collect_load_process(process: subprocess.Popen[str], spec: LoadSpec) -> LoadResult:
    """Wait for a load started by `start_load_process` and parse its result."""
    wall_limit = spec.duration * (2 if spec.warmup else 1) + spec.timeout + 30
    try:
        stdout, stderr = process.communicate(timeout=wall_limit)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed with exit code {process.returncode}:\n{stderr}")
    return LoadResult(**json.loads(stdout))


def run_load_process(spec: LoadSpec, python: str = sys.executable) -> LoadResult:
    """Run one load in a child process and return its result."""
    return collect_load_process(start_load_process(spec, python), spec)


def _spec_from_args(args: argparse.Namespace) -> LoadSpec:
    if args.spec_json:
        text = sys.stdin.read() if args.spec_json == "-" else args.spec_json
        return LoadSpec(**json.loads(text))
    if not args.target:
        raise SystemExit("loadgen: --target is required unless --spec-json is given")
    return LoadSpec(
        target=args.target, concurrency=args.concurrency, requests=args.requests, duration=args.duration,
        stream=args.stream, warmup=args.warmup, timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send a fixed-concurrency load of chat requests and print JSON results.")
    parser.add_argument("--target", help="unix:/path/to.sock or http://127.0.0.1:PORT")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--requests", type=int, default=1000, help="maximum number of measured requests")
    parser.add_argument("--duration", type=float, default=10.0, help="maximum seconds of the measured phase")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests sent first")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before one request counts as failed")
    parser.add_argument("--stream", action="store_true", help="ask for SSE streams and measure TTFT")
    parser.add_argument("--spec-json", help="a LoadSpec as JSON, or - to read it from stdin")
    spec = _spec_from_args(parser.parse_args(argv))
    result = asyncio.run(run_load(spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
