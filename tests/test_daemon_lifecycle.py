"""Daemon lifecycle on the real process: disconnects, SIGTERM, the socket file."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SpawnDaemon
from tests.harness import Daemon, local_config

RAMBLE = {"role": "user", "content": "Write a very long story about a dragon."}


def _open_stream_and_read_first_content(daemon: Daemon, max_tokens: int) -> socket.socket:
    body = (
        '{"model": "default", "stream": true, "temperature": 1.5, "max_tokens": %d, "messages": [%s]}'
        % (max_tokens, '{"role": "user", "content": "Write a very long story about a dragon."}')
    ).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(str(daemon.socket))
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    received = b""
    while b'"content":"' not in received.replace(b'"content":""', b""):
        received += conn.recv(65536)
    return conn


def _wait_for_log(daemon: Daemon, text: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in daemon.log():
            return True
        time.sleep(0.05)
    return False


def test_disconnect_stops_generation_and_frees_model(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    conn = _open_stream_and_read_first_content(daemon, max_tokens=1800)
    conn.close()

    assert _wait_for_log(daemon, "stopped after"), daemon.log()
    # The model is free again: a short request completes, well before the abandoned 1800 tokens
    # could have been generated.
    answer = daemon.openai_client(timeout=30).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content


def test_sigterm_lets_inflight_stream_finish(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    client = daemon.openai_client(timeout=60)
    chunks: list[str] = []
    first_chunk = threading.Event()

    def consume() -> None:
        stream = client.chat.completions.create(model="default", messages=[RAMBLE], max_tokens=60, stream=True)
        for chunk in stream:
            chunks.append(chunk.choices[0].finish_reason or "") if chunk.choices else None
            first_chunk.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_chunk.wait(60)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    reader.join(60)

    assert chunks[-1] in ("length", "stop")
    assert daemon.process.wait(60) == 0
    assert not daemon.socket.exists()
    assert "draining" in daemon.log()


def test_sigint_exits_zero_and_removes_socket(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    assert daemon.stop(signal.SIGINT) == 0
    assert not daemon.socket.exists()


def test_socket_is_private(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600


def test_stale_socket_file_is_replaced(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config(), start=False)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(daemon.socket))
    leftover.close()  # the file stays behind, as after a crash
    assert daemon.socket.exists()

    daemon.start()
    with daemon.http() as http:
        assert http.get("/healthz").status_code == 200
    assert "removing stale socket file" in daemon.log()


def test_second_daemon_on_live_socket_exits_with_error(spawn_daemon: SpawnDaemon) -> None:
    first = spawn_daemon(local_config())
    second = spawn_daemon(local_config(), start=False)
    second.socket = first.socket
    second.start(wait=False)
    assert second.process is not None
    assert second.process.wait(120) == 1
    assert "already serving" in second.log()
    with first.http() as http:
        assert http.get("/healthz").status_code == 200


def test_invalid_config_exits_2_with_file_and_line(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config().replace("routes:", "routez:"), start=False)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(60) == 2
    assert f"{daemon.config}:" in daemon.log()
    assert "routez: unknown key" in daemon.log()


def test_default_socket_is_under_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sage_bridge.config.settings import default_socket_path

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket_path() == tmp_path / "sage-bridge" / "bridge.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path().parent.name == f"sage-bridge-{os.getuid()}"
