"""Start the processes under test: the mock upstream, the bare proxy, the bridge and LiteLLM."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bridge_configs import DUMMY_KEY, ROUTE
from benchmarks.processes import ServerProcess, free_tcp_port, tcp_accepts, unix_accepts

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0  # seconds; LiteLLM 1.108 took about 8 s to start on the 2-core benchmark machine
LITELLM_VENV_VARIABLE = "SAGE_BENCH_LITELLM_VENV"
DEFAULT_LITELLM_VENV = REPO / "benchmarks" / ".litellm-venv"


@dataclass(slots=True)
class Server:
    """A started server and the load generator target that reaches it."""

    name: str
    target: str  # "unix:/path" or "http://127.0.0.1:PORT"
    process: ServerProcess
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request, e.g. a proxy key


def start_mock(workdir: Path, *, delay_ms: float = 0.0, chunks: int = 16, chunk_delay_ms: float = 0.0) -> Server:
    port = free_tcp_port()
    argv = [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(port), "--delay-ms", str(delay_ms),
            "--chunks", str(chunks), "--chunk-delay-ms", str(chunk_delay_ms)]
    process = ServerProcess("mock upstream", argv, workdir / "mock.log", cwd=REPO).start()
    process.wait_until(lambda: tcp_accepts(port), START_TIMEOUT)
    return Server("direct to mock", f"http://127.0.0.1:{port}", process)


def mock_port(mock: Server) -> int:
    return int(mock.target.rsplit(":", 1)[1])


def start_bare_proxy(workdir: Path, mock: Server) -> Server:
    socket_path = _socket_path("bare")
    argv = [sys.executable, "-m", "benchmarks.bare_proxy", "--socket", str(socket_path), "--upstream", mock.target]
    process = ServerProcess("bare proxy", argv, workdir / "bare_proxy.log", cwd=REPO).start()
    process.wait_until(lambda: unix_accepts(socket_path), START_TIMEOUT)
    return Server("bare aiohttp proxy", f"unix:{socket_path}", process)


@dataclass(slots=True)
class BridgeFiles:
    config: Path
    socket: Path
    state_dir: Path


def bridge_files(workdir: Path, label: str) -> BridgeFiles:
    directory = workdir / f"bridge-{label}"
    directory.mkdir(parents=True, exist_ok=True)
    return BridgeFiles(directory / "bridge.yaml", _socket_path(f"bridge-{label}"), directory / "state")


def start_bridge(workdir: Path, label: str, config_text: str) -> Server:
    """Start `python -m sage_bridge.daemon` on a private socket, as the test harness does."""
    files = bridge_files(workdir, label)
    files.config.write_text(config_text)
    argv = [sys.executable, "-m", "sage_bridge.daemon", "--config", str(files.config),
            "--socket", str(files.socket), "--state-dir", str(files.state_dir)]
    process = ServerProcess(f"bridge ({label})", argv, workdir / f"bridge-{label}.log", cwd=files.config.parent).start()
    server = Server(f"bridge ({label})", f"unix:{files.socket}", process)
    process.wait_until(lambda: unix_accepts(files.socket) and _serving(server), START_TIMEOUT)
    return server


def _serving(bridge: Server) -> bool:
    """Return True once /healthz reports the serving state: an open socket alone is not enough."""
    try:
        status, body = unix_get(bridge.target, "/healthz")
    except OSError:
        return False
    return status == 200 and json.loads(body).get("state") == "serving"


def litellm_venv() -> Path | None:
    """Return LiteLLM's own virtual environment, or None when it has no `litellm` command."""
    venv = Path(os.environ.get(LITELLM_VENV_VARIABLE) or DEFAULT_LITELLM_VENV)
    return venv if (venv / "bin" / "litellm").is_file() else None


def litellm_version(venv: Path) -> str:
    metadata = sorted((venv / "lib").glob("python*/site-packages/litellm-*.dist-info/METADATA"))
    for line in metadata[0].read_text().splitlines() if metadata else []:
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def start_litellm(workdir: Path, venv: Path, mock: Server) -> Server:
    """Start LiteLLM's proxy (one worker) on 127.0.0.1, with every outbound call it can make turned off."""
    port = free_tcp_port()
    config = workdir / "litellm.yaml"
    config.write_text(_litellm_config(mock))
    # A throwaway key: the proxy refuses to start without one, and it lives only as long as this run.
    master_key = "sk-" + secrets.token_hex(16)
    env = {
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # use the bundled price map instead of fetching it
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]
    process = ServerProcess("LiteLLM proxy", argv, workdir / "litellm.log", env=env, cwd=workdir).start()
    process.wait_until(lambda: tcp_accepts(port) and _http_ok(f"http://127.0.0.1:{port}/health/liveliness"), START_TIMEOUT)
    return Server("LiteLLM proxy", f"http://127.0.0.1:{port}", process, {"authorization": f"Bearer {master_key}"})


def _litellm_config(mock: Server) -> str:
    entry = {
        "model_name": ROUTE,
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": mock.target + "/v1", "api_key": DUMMY_KEY},
    }
    # JSON is valid YAML, and it spares quoting rules.
    return json.dumps({"model_list": [entry], "litellm_settings": {"telemetry": False}}, indent=2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL built above
            return bool(response.status == 200)
    except OSError:
        return False


def _socket_path(label: str) -> Path:
    # AF_UNIX paths are limited to 107 bytes, so sockets live directly under /tmp.
    return Path(f"/tmp/sb-bench-{os.getpid()}-{label}.sock")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_get(target: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send GET path to a `unix:` target and return the status and body."""
    connection = _UnixHTTPConnection(target.removeprefix("unix:"), timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def bridge_status(bridge: Server) -> dict[str, Any] | None:
    """Return the bridge's /admin/status JSON, or None unless it returns status 200."""
    try:
        status, body = unix_get(bridge.target, "/admin/status")
    except OSError:
        return None
    if status != 200:
        return None
    data: dict[str, Any] = json.loads(body)
    return data
