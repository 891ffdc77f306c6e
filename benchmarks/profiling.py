"""Sample the bridge under load with py-spy and summarize where its CPU time goes.

py-spy attaches to the running daemon (it needs ptrace, which root has here) and writes
collapsed stacks: `frame;frame;...;frame COUNT` per line. The summary lists the functions with
the most self samples, the bridge's own functions with the most inclusive samples, and self
samples grouped by package. Samples of every thread count, so the ledger's writer thread shows too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.bridge_configs import mock_config
from benchmarks.loadgen import LoadSpec, collect_load_process, start_load_process
from benchmarks.servers import Server, mock_port, start_bridge

SAMPLE_RATE = 250  # samples per second
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PACKAGES = ("sage_bridge", "aiohttp", "openai", "httpx2", "httpcore2", "pydantic", "pydantic_core", "yarl", "multidict",
             "anyio", "h11", "json", "logging", "asyncio", "sqlite3", "selectors", "ssl", "email", "uuid")


def py_spy() -> str | None:
    """Return the py-spy command next to this Python, or on PATH, or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def _frame_key(frame: str) -> tuple[str, str]:
    """Return (function with file, without line number) and its package name."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "other"
    path = match["file"]
    return f"{match['function']} ({_short_path(path)})", _package(path)


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _package(path: str) -> str:
    short = _short_path(path)
    top = short.split("/", 1)[0].removesuffix(".py")
    return top if top in _PACKAGES else "other"


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Turn py-spy raw output (recorded with --threads) into shares per thread and package, the
    top self functions, and the bridge's own functions by inclusive time."""
    threads: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            # "thread (TID): NAME"; worker threads are numbered, so their names are cut at the first digit.
            threads[re.sub(r"[-_]?\d.*$", "", frames.pop(0).split(": ", 1)[-1]) or "unnamed"] += count
        keys = [_frame_key(frame) for frame in frames]
        if not keys:
            continue  # a thread sampled with no Python frame, e.g. inside a C call at its start
        leaf, package = keys[-1]
        self_samples[leaf] += count
        callers.setdefault(leaf, Counter())[" <- ".join(name for name, _ in keys[-4:-1][::-1])] += count
        packages[package] += count
        # Inclusive time is kept for the bridge's own functions, where an optimisation would go;
        # the event loop and the daemon's entry point are in every sample and tell nothing apart.
        for key in {name for name, owner in keys if owner == "sage_bridge" and "daemon.py" not in name}:
            inclusive[key] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": name, "percent": 100 * count / total} for name, count in counter.most_common(top)]

    hottest = [
        {"name": name, "percent": 100 * count / total, "caller": callers[name].most_common(1)[0][0]}
        for name, count in self_samples.most_common(top)
    ]
    return {"samples": total, "threads": share(threads), "self": hottest, "inclusive": share(inclusive),
            "packages": share(packages)}


def profile_bridge(workdir: Path, mock: Server, seconds: float) -> dict[str, Any]:
    """Profile a bridge with every feature on, once under a JSON load and once under streams."""
    command = py_spy()
    if command is None:
        return {"skipped": "py-spy is not installed; install it with .venv/bin/pip install py-spy"}
    bridge = start_bridge(workdir, "profile", mock_config(mock_port(mock), features=True))
    results: dict[str, Any] = {"rate": SAMPLE_RATE, "seconds": seconds}
    try:
        # "json-gil" samples only the thread holding the GIL: the work that limits the event loop.
        for label, stream, gil in (("json", False, False), ("json-gil", False, True), ("stream", True, False)):
            spec = LoadSpec(target=bridge.target, concurrency=32, requests=10_000_000, duration=seconds + 3.0,
                            stream=stream, warmup=100)
            load = start_load_process(spec)
            time.sleep(1.5)  # let the warm-up pass
            output = workdir / f"py-spy-{label}.txt"
            completed = subprocess.run(
                [command, "record", "--pid", str(bridge.process.pid), "--duration", str(int(seconds)), "--rate",
                 str(SAMPLE_RATE), "--format", "raw", "--output", str(output), "--nonblocking", "--threads",
                 *(["--gil"] if gil else [])],
                capture_output=True, text=True, timeout=seconds + 60, check=False,
            )
            result = collect_load_process(load, spec)
            if completed.returncode != 0 or not output.exists():
                results[label] = {"error": f"py-spy failed ({completed.returncode}): {completed.stderr.strip()[-400:]}"}
                continue
            results[label] = {**summarize_collapsed(output.read_text()), "rps": result.rps, "errors": result.errors,
                              "raw": str(output)}
            print(f"  profiled {label}: {results[label]['samples']} samples at {result.rps:.0f} rps", flush=True)
    finally:
        bridge.process.stop()
    return results
