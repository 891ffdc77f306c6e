"""bridgectl against the real daemon, run as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sage_bridge.cli.main import build_parser
from tests.harness import REPO, Daemon

BRIDGECTL = [sys.executable, "-m", "sage_bridge.cli.main"]


def bridgectl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGECTL, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_status_shows_routes_and_deployments(local_daemon: Daemon) -> None:
    result = bridgectl("--socket", str(local_daemon.socket), "status")
    assert result.returncode == 0
    assert "bridged is serving" in result.stdout
    assert str(local_daemon.config) in result.stdout
    assert "default" in result.stdout
    assert "smollm2" in result.stdout


def test_status_json_has_pid_and_uptime(local_daemon: Daemon) -> None:
    result = bridgectl("--socket", str(local_daemon.socket), "status", "--json")
    data = json.loads(result.stdout)
    assert local_daemon.process is not None
    assert data["pid"] == local_daemon.process.pid
    assert data["uptime_seconds"] >= 0
    assert data["routes"][0]["targets"] == ["smollm2"]


def test_socket_from_environment_variable(local_daemon: Daemon) -> None:
    result = bridgectl("status", "--json", env={"SAGE_BRIDGE_SOCKET": str(local_daemon.socket)})
    assert result.returncode == 0
    assert json.loads(result.stdout)["state"] == "serving"


def test_socket_after_the_command(local_daemon: Daemon) -> None:
    result = bridgectl("status", "--json", "--socket", str(local_daemon.socket))
    assert result.returncode == 0
    assert json.loads(result.stdout)["state"] == "serving"


def test_socket_before_the_command_is_kept() -> None:
    args = build_parser().parse_args(["--socket", "/tmp/first.sock", "status"])
    assert args.socket == "/tmp/first.sock"


def test_chat_streams_answer(local_daemon: Daemon) -> None:
    result = bridgectl("--socket", str(local_daemon.socket), "chat", "-m", "default", "--temperature", "0",
                       "What is the capital of France?")
    assert result.returncode == 0
    assert "Paris" in result.stdout


def test_chat_unknown_route_fails_with_message(local_daemon: Daemon) -> None:
    result = bridgectl("--socket", str(local_daemon.socket), "chat", "-m", "nope", "hi")
    assert result.returncode == 1
    assert "nope" in result.stderr


def test_daemon_not_running_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = bridgectl("--socket", str(tmp_path / "absent.sock"), "status")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "not running" in result.stderr
    assert "start it with" in result.stderr


def test_check_reports_errors_with_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text((REPO / "bridge.yaml").read_text().replace("targets: [gpt-5-mini,", "targets: [gpt-5-mni,"))
    (tmp_path / "policies").symlink_to(REPO / "policies")
    result = bridgectl("check", str(config))
    assert result.returncode == 1
    assert 'unknown deployment or route "gpt-5-mni" (did you mean "gpt-5-mini"?)' in result.stdout
    assert f"{config}:" in result.stdout


def test_check_accepts_default_config_with_warnings() -> None:
    result = bridgectl("check", str(REPO / "bridge.yaml"), env={"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "COHERE_API_KEY": ""})
    assert result.returncode == 0
    assert "warning:" in result.stdout
    assert "OK (1 route, 4 deployments" in result.stdout


def test_graph_shows_live_route_tree(local_daemon: Daemon) -> None:
    text = bridgectl("--socket", str(local_daemon.socket), "graph")
    tree = json.loads(bridgectl("--socket", str(local_daemon.socket), "graph", "--json").stdout)
    dot = bridgectl("--socket", str(local_daemon.socket), "graph", "--dot")
    assert text.returncode == 0
    assert "default (fallback)" in text.stdout
    assert "smollm2 -> local/" in text.stdout
    assert tree[0]["name"] == "default"
    assert tree[0]["targets"][0]["state"] == "enabled"
    assert dot.stdout.startswith("digraph routes {")
