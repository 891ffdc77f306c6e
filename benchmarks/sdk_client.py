"""The openai SDK as a load generator, straight to the mock: the cost of the bridge's upstream client.

The bridge's `openai` provider calls upstreams through `openai.AsyncOpenAI` (httpx2 underneath).
Running that client alone against the mock, next to the aiohttp load generator on the same path,
shows how much of the bridge's added latency and CPU the SDK accounts for.
Run it alone: `python -m benchmarks.sdk_client --base-url http://127.0.0.1:8001/v1 --concurrency 32`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import openai

from benchmarks.bridge_configs import DUMMY_KEY
from benchmarks.loadgen import DEFAULT_BODY, REPO
from benchmarks.stats import summarize


async def _one(client: openai.AsyncOpenAI, stream: bool) -> None:
    messages: Any = DEFAULT_BODY["messages"]
    if not stream:
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=16)
        return
    chunks = await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True},
    )
    async for _ in chunks:
        pass


async def run(base_url: str, concurrency: int, duration: float, warmup: float, stream: bool) -> dict[str, Any]:
    """Send requests back to back from `concurrency` tasks for `duration` seconds after a warm-up."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=DUMMY_KEY, max_retries=0, timeout=60.0)
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def worker(deadline: float, record: bool) -> None:
        # The deadline stops every task by itself.
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await _one(client, stream)
            except openai.OpenAIError as exc:
                if record:
                    errors[type(exc).__name__] += 1
                continue
            if record:
                latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker(time.perf_counter() + warmup, False) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + duration, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {"concurrency": concurrency, "stream": stream, "ok": len(latencies), "errors": dict(errors),
            "rps": len(latencies) / elapsed, "latency_ms": summarize(latencies)}


def run_process(base_url: str, concurrency: int, duration: float, stream: bool = False) -> dict[str, Any]:
    """Run the SDK client in its own process and return its result."""
    argv = [sys.executable, "-m", "benchmarks.sdk_client", "--base-url", base_url, "--concurrency", str(concurrency),
            "--duration", str(duration), *(["--stream"] if stream else [])]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=duration * 2 + 60, check=False, cwd=REPO)
    if completed.returncode != 0:
        raise RuntimeError(f"sdk_client failed with exit code {completed.returncode}:\n{completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load the mock with the openai SDK client and print JSON results.")
    parser.add_argument("--base-url", required=True, help="the mock's base URL, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds of load sent first")
    parser.add_argument("--stream", action="store_true", help="stream the responses")
    args = parser.parse_args(argv)
    if not args.base_url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        parser.error(f"--base-url {args.base_url}: the SDK client targets loopback only")
    print(json.dumps(asyncio.run(run(args.base_url, args.concurrency, args.duration, args.warmup, args.stream))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
