"""Local model tokens per second: SmolLM2 through the bridge against llama-cpp-python called directly.

Both sides load the same GGUF file with the same context and thread count, format the same
messages with the model's chat template, and generate greedily with the same seed and
max_tokens. Runs alternate between the two sides so that machine noise falls on both.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bridge_configs import LOCAL_MODEL, ROUTE, local_config
from benchmarks.servers import REPO, Server, start_bridge
from benchmarks.stats import median

CONTEXT = 2048
SHIPPED_THREADS = 2  # the thread count of the local provider in the default bridge.yaml
SEED = 42
GENERATION_TIMEOUT = 300.0  # seconds; a busy 2-core machine has slowed one generation to over a minute
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]


def _request(max_tokens: int) -> dict[str, Any]:
    return {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0, "seed": SEED}


async def _bridge_generate(bridge: Server, request: dict[str, Any]) -> dict[str, Any]:
    body = {"model": ROUTE, "stream": True, "stream_options": {"include_usage": True}, **request}
    connector = aiohttp.UnixConnector(path=bridge.target.removeprefix("unix:"))
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    first: float | None = None
    timeout = aiohttp.ClientTimeout(total=GENERATION_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        async with session.post("http://localhost/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    text = choice["delta"].get("content")
                    if text:
                        first = first if first is not None else time.perf_counter() - started
                        pieces.append(text)
        total = time.perf_counter() - started
    return {"seconds": total, "ttft": first, "completion_tokens": usage.get("completion_tokens", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0), "text": "".join(pieces)}


class DirectRunner:
    """The local_direct child process: one JSON request in, one JSON result out."""

    def __init__(self, log_path: Path, threads: int) -> None:
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.local_direct", "--model", LOCAL_MODEL, "--context", str(CONTEXT),
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO,
        )
        if self._line() != "READY":
            raise RuntimeError(f"local_direct did not start; see {log_path}")

    def _line(self) -> str:
        """Read one line, or raise TimeoutError when none comes within GENERATION_TIMEOUT seconds."""
        assert self.process.stdout is not None
        # One request gets exactly one line back, so nothing waits in Python's buffer when select() runs.
        ready, _, _ = select.select([self.process.stdout], [], [], GENERATION_TIMEOUT)
        if not ready:
            raise TimeoutError(f"local_direct sent nothing for {GENERATION_TIMEOUT:.0f} s")
        return self.process.stdout.readline().strip()

    def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self._line()
        if not line:
            raise RuntimeError("local_direct exited during a generation")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _rates(run: dict[str, Any]) -> dict[str, Any]:
    tokens = run["completion_tokens"]
    decode_seconds = run["seconds"] - (run["ttft"] or 0.0)
    return {
        **run,
        "tokens_per_second": tokens / run["seconds"] if run["seconds"] > 0 else None,
        # Decode only: the tokens after the first, over the time after the first.
        "decode_tokens_per_second": (tokens - 1) / decode_seconds if tokens > 1 and decode_seconds > 0 else None,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tokens_per_second": median([run["tokens_per_second"] for run in runs]),
        "decode_tokens_per_second": median([run["decode_tokens_per_second"] for run in runs]),
        "ttft_ms": median([run["ttft"] * 1000 if run["ttft"] is not None else None for run in runs]),
        "completion_tokens": median([run["completion_tokens"] for run in runs]),
        "prompt_tokens": median([run["prompt_tokens"] for run in runs]),
    }


def local_tokens(workdir: Path, runs: int, max_tokens: int, threads: int) -> dict[str, Any]:
    """Alternate `runs` generations on each side after one warm-up each; report medians."""
    request = _request(max_tokens)
    bridge = start_bridge(workdir, f"local-{threads}", local_config(CONTEXT, threads))
    direct = DirectRunner(workdir / f"local_direct-{threads}.log", threads)
    try:
        direct.generate(request)
        asyncio.run(_bridge_generate(bridge, request))
        direct_runs: list[dict[str, Any]] = []
        bridge_runs: list[dict[str, Any]] = []
        for index in range(runs):
            # Alternate which side goes first, so neither always runs on a warmer cache.
            order = ("direct", "bridge") if index % 2 == 0 else ("bridge", "direct")
            for side in order:
                if side == "direct":
                    direct_runs.append(_rates(direct.generate(request)))
                else:
                    bridge_runs.append(_rates(asyncio.run(_bridge_generate(bridge, request))))
            print(f"  local, {threads} threads [{index + 1}/{runs}] direct {direct_runs[-1]['tokens_per_second']:.1f} tok/s, "
                  f"bridge {bridge_runs[-1]['tokens_per_second']:.1f} tok/s", flush=True)
    finally:
        direct.close()
        bridge.process.stop()

    return {
        "model": LOCAL_MODEL, "context": CONTEXT, "threads": threads, "seed": SEED, "max_tokens": max_tokens,
        "messages": MESSAGES,
        "direct": _summary(direct_runs),
        "bridge": _summary(bridge_runs),
        "same_text": all(run["text"] == direct_runs[0]["text"] for run in direct_runs + bridge_runs),
        "sample_text": direct_runs[0]["text"][:200] if direct_runs else "",
        "runs": runs,
    }
