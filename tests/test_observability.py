"""Logging (request ids, JSON lines, repeat suppression, redaction), Prometheus metrics and
`bridgectl status` rendering, in process and against the real daemon."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sage_bridge import logs
from sage_bridge.cli.client import DaemonUnreachable
from sage_bridge.cli.render import make_console, render_status, watch_status
from sage_bridge.logs import JsonFormatter, RedactingFilter, RepeatFilter, RequestIdFilter, TextFormatter, build_handler
from sage_bridge.metrics import Metrics
from sage_bridge.secrets import MASK, register_secret
from sage_bridge.server.keys import METRICS
from tests.app_env import COMPLETION_TOKENS, PROMPT_TOKENS, chat_body, cloud_config, serve_app, serve_upstream
from tests.conftest import SpawnDaemon

# Logging, in process.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.WARNING, name: str = "sage_bridge.routing.router") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeat_filter_passes_first_and_suppresses_repeats() -> None:
    repeat = RepeatFilter(interval=10.0, clock=FakeClock())
    assert repeat.filter(record("deployment %s failed", "a")) is True
    assert repeat.filter(record("deployment %s failed", "b")) is False
    assert repeat.filter(record("deployment %s failed", "c")) is False


def test_repeat_filter_reports_suppressed_count_after_interval() -> None:
    clock = FakeClock()
    repeat = RepeatFilter(interval=10.0, clock=clock)
    repeat.filter(record("deployment %s failed", "a"))
    for _ in range(3):
        clock.now += 2
        repeat.filter(record("deployment %s failed", "b"))
    clock.now += 5  # 11 s after the first line
    late = record("deployment %s failed", "z")
    assert repeat.filter(late) is True
    assert late.getMessage() == "deployment z failed (3 similar messages suppressed in the last 11 s)"


def test_repeat_filter_keeps_distinct_templates_and_loggers() -> None:
    repeat = RepeatFilter(interval=10.0, clock=FakeClock())
    assert repeat.filter(record("deployment %s failed", "a")) is True
    assert repeat.filter(record("budget %s is spent", "a")) is True
    assert repeat.filter(record("deployment %s failed", "a", name="sage_bridge.other")) is True


def test_repeat_filter_never_suppresses_info() -> None:
    repeat = RepeatFilter(interval=10.0, clock=FakeClock())
    passed = [repeat.filter(record("request %s finished", str(i), level=logging.INFO)) for i in range(5)]
    assert passed == [True] * 5


def test_repeat_filter_keys_placeholder_templates_by_text() -> None:
    repeat = RepeatFilter(interval=10.0, clock=FakeClock())
    assert repeat.filter(record("%s", "provider openai is disabled")) is True
    assert repeat.filter(record("%s", "provider cohere is disabled")) is True
    assert repeat.filter(record("%s", "provider openai is disabled")) is False


def format_with(formatter: logging.Formatter, rec: logging.LogRecord) -> str:
    for flt in (RequestIdFilter(), RedactingFilter()):
        flt.filter(rec)
    return formatter.format(rec)


def test_json_line_carries_request_id_and_extra_fields() -> None:
    token = logs.REQUEST_ID.set("req-42")
    try:
        rec = record("request %s finished", "req-42", level=logging.INFO)
        rec.route = "default"
        line = json.loads(format_with(JsonFormatter(), rec))
    finally:
        logs.REQUEST_ID.reset(token)
    assert line["request_id"] == "req-42"
    assert line["message"] == "request req-42 finished"
    assert line["level"] == "INFO"
    assert line["route"] == "default"


def test_json_line_outside_request_has_no_request_id() -> None:
    line = json.loads(format_with(JsonFormatter(), record("serving", level=logging.INFO)))
    assert "request_id" not in line


def test_text_line_carries_request_id() -> None:
    token = logs.REQUEST_ID.set("req-7")
    try:
        line = format_with(TextFormatter(), record("moving on", level=logging.INFO))
    finally:
        logs.REQUEST_ID.reset(token)
    assert " [req-7]: moving on" in line


def test_text_time_changes_with_the_second() -> None:
    formatter = TextFormatter()
    first, same_second, next_second = (record("tick", level=logging.INFO) for _ in range(3))
    first.created, first.msecs = 1_800_000_000.120, 120.0
    same_second.created, same_second.msecs = 1_800_000_000.950, 950.0
    next_second.created, next_second.msecs = 1_800_000_001.005, 5.0
    expected = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_800_000_000))
    expected_next = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_800_000_001))

    assert format_with(formatter, first).startswith(f"{expected},120 ")
    assert format_with(formatter, same_second).startswith(f"{expected},950 ")
    assert format_with(formatter, next_second).startswith(f"{expected_next},005 ")


class CountingStream(io.StringIO):
    """A text stream that counts its write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def batching_logger(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger("sage_bridge.test_batching")
    logger.handlers = [build_handler("text", stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_loop_info_lines_are_written_together() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)

    for n in range(3):
        logger.info("line %d", n)
    before = stream.getvalue()
    await asyncio.sleep(0)

    assert before == ""
    assert stream.getvalue().count("line ") == 3
    assert stream.writes == 1


async def test_loop_warning_is_written_at_once() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)

    logger.info("first")
    logger.warning("second")

    assert "first" in stream.getvalue()
    assert stream.getvalue().index("first") < stream.getvalue().index("second")


def test_lines_outside_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)

    logger.info("no loop here")

    assert "no loop here" in stream.getvalue()


async def test_flush_writes_buffered_lines() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)

    logger.info("pending")
    logger.handlers[0].flush()

    assert "pending" in stream.getvalue()


def test_json_output_redacts_message_traceback_and_extra() -> None:
    secret = "sk-json-canary-5f1e2d3c4b"
    register_secret(secret)
    try:
        raise RuntimeError(f"upstream said {secret}")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", (secret,), sys.exc_info())
    rec.upstream_body = f"echo {secret}"
    line = format_with(JsonFormatter(), rec)
    assert secret not in line
    assert MASK in json.loads(line)["message"]
    assert MASK in json.loads(line)["exception"]
    assert MASK in json.loads(line)["upstream_body"]


def test_text_output_redacts_traceback() -> None:
    secret = "sk-text-canary-9a8b7c6d5e"
    register_secret(secret)
    try:
        raise RuntimeError(f"upstream said {secret}")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert secret not in format_with(TextFormatter(), rec)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Capture the root logger's records as JSON lines, with the daemon's filters."""
    stream = io.StringIO()
    handler = build_handler("json", stream)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# The app in process, on a mock upstream.


async def test_request_id_is_echoed_and_on_every_line(tmp_path: Path, json_log: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        response = await env.session.post("/v1/chat/completions", json=chat_body(), headers={"x-request-id": "trace-me-1"})
        await response.read()
    assert response.headers["x-request-id"] == "trace-me-1"
    mine = [line for line in lines_of(json_log) if "trace-me-1" in line["message"]]
    assert mine
    assert all(line.get("request_id") == "trace-me-1" for line in mine)


async def test_finished_line_has_route_tokens_and_cost(tmp_path: Path, json_log: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        response = await env.session.post("/v1/chat/completions", json=chat_body(), headers={"x-request-id": "cost-1"})
        await response.read()
    finished = [line for line in lines_of(json_log) if line.get("event") == "request_finished"]
    assert len(finished) == 1
    line = finished[0]
    assert line["route"] == "default"
    assert line["deployment"] == "gpt-mock"
    assert line["attempts"] == 1
    assert line["prompt_tokens"] == PROMPT_TOKENS
    assert line["completion_tokens"] == COMPLETION_TOKENS
    # 12 prompt tokens at $1/M plus 5 completion tokens at $2/M.
    assert line["cost_usd"] == "0.000022"
    assert "cost=0.000022" in line["message"]
    assert "latency=" in line["message"]


async def test_refused_request_is_logged_once(tmp_path: Path, json_log: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        response = await env.session.post("/v1/chat/completions", json=chat_body("no-such-route"),
                                          headers={"x-request-id": "refuse-1"})
        await response.read()
    assert response.status == 404
    about_it = [line for line in lines_of(json_log) if line.get("request_id") == "refuse-1"]
    assert len(about_it) == 1
    assert about_it[0]["event"] == "request_rejected"
    assert about_it[0]["status"] == 404
    assert about_it[0]["code"] == "model_not_found"


async def test_failed_upstream_is_logged_once_as_failed(tmp_path: Path, json_log: io.StringIO) -> None:
    async with serve_upstream("echo_key_401") as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        response = await env.session.post("/v1/chat/completions", json=chat_body(), headers={"x-request-id": "fail-1"})
        await response.read()
    assert response.status == 502
    ends = [line for line in lines_of(json_log) if line.get("event", "").startswith("request_")]
    assert [line["event"] for line in ends] == ["request_failed"]
    assert ends[0]["request_id"] == "fail-1"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str) -> float:
    return found[(metric, frozenset(labels.items()))]


async def scrape(env: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await env.session.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(await response.text())


async def test_metrics_count_requests_tokens_and_cost(tmp_path: Path) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        for body in (chat_body(), chat_body(stream=True), chat_body("no-such-route")):
            await (await env.session.post("/v1/chat/completions", json=body)).read()
        found = await scrape(env)
    ok = {"route": "default", "deployment": "gpt-mock"}
    assert value(found, "sage_bridge_requests_total", outcome="ok", **ok) == 2
    assert value(found, "sage_bridge_requests_total", route="", deployment="", outcome="rejected") == 1
    assert value(found, "sage_bridge_rejections_total", code="model_not_found") == 1
    assert value(found, "sage_bridge_tokens_total", kind="prompt", **ok) == 2 * PROMPT_TOKENS
    assert value(found, "sage_bridge_tokens_total", kind="completion", **ok) == 2 * COMPLETION_TOKENS
    assert value(found, "sage_bridge_cost_usd_total", **ok) == pytest.approx(2 * 0.000022)
    assert value(found, "sage_bridge_request_duration_seconds_count", **ok) == 2
    assert value(found, "sage_bridge_time_to_first_token_seconds_count", **ok) == 1
    assert value(found, "sage_bridge_overhead_seconds_count") == 2


async def test_metrics_show_budgets_limiters_and_cooldowns(tmp_path: Path) -> None:
    budget = "budgets:\n  - {scope: global, usd: 5, per: day}\n"
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url, extra=budget)) as env:
        await (await env.session.post("/v1/chat/completions", json=chat_body(max_tokens=10))).read()
        found = await scrape(env)
        digest = env.runtime.graph.loaded.digest
    window = {"scope": "global", "window": "day UTC"}
    assert value(found, "sage_bridge_budget_limit_usd", **window) == 5
    assert value(found, "sage_bridge_budget_spent_usd", **window) == pytest.approx(0.000022)
    assert value(found, "sage_bridge_budget_remaining_usd", **window) == pytest.approx(5 - 0.000022)
    assert value(found, "sage_bridge_limiter_rpm_limit", scope="deployment", name="gpt-mock") == 600
    assert value(found, "sage_bridge_limiter_rpm_used", scope="deployment", name="gpt-mock") > 0
    assert value(found, "sage_bridge_cooldown_state", deployment="gpt-mock", state="closed") == 1
    assert value(found, "sage_bridge_config_info", sha256=digest, path=str(tmp_path / "bridge.yaml")) == 1


async def test_admin_status_has_budgets_limits_and_cooldowns(tmp_path: Path) -> None:
    budget = "budgets:\n  - {scope: global, usd: 5, per: day}\n"
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url, extra=budget)) as env:
        await (await env.session.post("/v1/chat/completions", json=chat_body(max_tokens=10))).read()
        data = await (await env.session.get("/admin/status")).json()
    budget_row = data["budgets"][0]
    assert budget_row["scope"] == "global"
    assert budget_row["spent_usd"] == "0.000022"
    assert budget_row["limit_usd"] == "5"
    assert budget_row["spent_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS
    assert data["limits"]["deployments"][0]["name"] == "gpt-mock"
    assert data["limits"]["deployments"][0]["rpm_limit"] == 600
    assert data["limits"]["admission"]["queued"] == 0
    assert data["cooldowns"][0]["deployment"] == "gpt-mock"
    assert data["cooldowns"][0]["state"] == "closed"


async def test_metrics_count_reloads_by_outcome(tmp_path: Path) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        env.app[METRICS].reload_finished("accepted")
        env.app[METRICS].reload_finished("rejected")
        env.app[METRICS].reload_finished("rejected")
        found = await scrape(env)
    assert value(found, "sage_bridge_reloads_total", outcome="accepted") == 1
    assert value(found, "sage_bridge_reloads_total", outcome="rejected") == 2


def test_metrics_registries_are_per_instance() -> None:
    first, second = Metrics(), Metrics()
    first.reload_finished("accepted")
    text, _ = second.render()
    assert 'sage_bridge_reloads_total{outcome="accepted"}' not in text.decode()


def test_metrics_offer_openmetrics_when_asked() -> None:
    body, content_type = Metrics().render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


# bridgectl status rendering.

STATUS: dict[str, Any] = {
    "pid": 4242, "state": "serving", "uptime_seconds": 3725.0, "socket": "/run/sb/bridge.sock", "in_flight": 1,
    "config": {"path": "/etc/sb/bridge.yaml", "files": [], "sha256": "ab" * 32, "loaded_at": 0, "warnings": []},
    "routes": [{"name": "default", "strategy": "fallback", "targets": ["gpt", "smollm2"], "terminal": "smollm2"}],
    "deployments": [{"name": "gpt", "provider": "openai", "type": "openai", "model": "gpt-5-mini",
                     "state": "disabled", "disabled_reason": "no key"}],
    "budgets": [{"scope": "route:default", "window": "day Europe/Berlin", "spent_usd": "1.25", "reserved_usd": "0.5",
                 "limit_usd": "5", "remaining_usd": "3.25", "spent_tokens": 1200, "limit_tokens": None,
                 "resets_at": "2026-01-02T00:00:00+01:00", "on_exceed": "fallback", "soft_exceeded": False}],
    "limits": {"deployments": [{"scope": "deployment", "name": "gpt", "rpm_used": 12.0, "rpm_limit": 500,
                                "tpm_used": None, "tpm_limit": None, "in_flight": 2, "max_concurrency": 8,
                                "held_back_for": 3.5}],
               "clients": [], "admission": {"in_flight": 3, "max_in_flight": 16, "queued": 0, "queue_size": 100}},
    "cooldowns": [{"deployment": "gpt", "state": "open", "failures_in_window": 3, "cooldown_remaining": 12.5,
                   "probe_in_flight": False}],
}


def test_render_status_has_every_table() -> None:
    text = render_status(STATUS)
    assert "bridged is serving (pid 4242, up 1h02m05s)" in text
    assert "Budgets" in text
    assert "Rate limits" in text
    assert "Cooldowns" in text
    assert "admitted 3 of 16, 0 queued" in text


def test_render_status_rows() -> None:
    rows = {line.split()[0]: line.split() for line in render_status(STATUS).splitlines() if line.strip()}
    assert rows["route:default"][3:7] == ["$1.25", "$0.5", "$5", "$3.25"]
    assert "12 / 500" in " ".join(rows["deployment"])
    assert "3.5 s" in " ".join(rows["deployment"])
    assert rows["gpt"][:4] == ["gpt", "open", "3", "12.5"]


def test_render_status_without_optional_sections() -> None:
    minimal = {key: STATUS[key] for key in ("pid", "state", "uptime_seconds", "socket", "in_flight", "config",
                                            "routes", "deployments")}
    text = render_status(minimal)
    assert "Deployments" in text
    assert "Budgets" not in text
    assert "Cooldowns" not in text


def test_console_off_terminal_has_no_colour() -> None:
    stream = io.StringIO()
    console = make_console(stream)
    console.print(render_status(STATUS))
    assert console.is_terminal is False
    assert "\x1b[" not in stream.getvalue()


async def test_watch_refreshes_until_interrupted() -> None:
    fetched: list[int] = []
    waits: list[float] = []

    async def fetch() -> dict[str, Any]:
        fetched.append(1)
        if len(fetched) == 2:
            raise DaemonUnreachable(Path("/nowhere.sock"))
        return {**STATUS, "in_flight": len(fetched)}

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise KeyboardInterrupt

    stream = io.StringIO()
    code = await watch_status(fetch, make_console(stream), 0.5, sleep=sleep)
    output = stream.getvalue()
    assert code == 0
    assert waits == [0.5, 0.5, 0.5]
    assert output.count("bridged is serving") == 2
    assert "not running on /nowhere.sock" in output
    assert "in flight: 3" in output


async def test_watch_json_prints_one_document_per_refresh() -> None:
    waits: list[float] = []

    async def fetch() -> dict[str, Any]:
        return STATUS

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise asyncio.CancelledError

    stream = io.StringIO()
    await watch_status(fetch, make_console(stream), 1.0, as_json=True, sleep=sleep)
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(documents) == 2
    assert documents[0]["pid"] == 4242


# The canary: a configured key never leaves the daemon.

CANARY = "sk-canary-7d41c0ffee5eed2b9a"
CLIENT_CANARY = "client-canary-3e9f0a1b2c"
BRIDGECTL = [sys.executable, "-m", "sage_bridge.cli.main"]


async def test_canary_key_never_leaks(spawn_daemon: SpawnDaemon) -> None:
    async with serve_upstream("echo_key_401") as upstream:
        config = cloud_config(upstream.base_url, api_key="${CANARY_KEY}")
        daemon = spawn_daemon(config, env={"CANARY_KEY": CANARY}, start=False)
        await asyncio.to_thread(daemon.start, True, ["--log-level", "DEBUG"])
        seen = await asyncio.to_thread(_exercise, daemon)
        await asyncio.to_thread(daemon.stop)
    log = daemon.log()
    everything = "\n".join([*seen, log])
    assert upstream.requests  # the key really went upstream (an auth failure then cools the deployment down)
    assert " DEBUG " in log
    assert CANARY not in everything
    assert CLIENT_CANARY not in everything
    assert MASK in seen[0]  # the upstream echo of the key reached the error body, masked


def _exercise(daemon: Any) -> list[str]:
    seen: list[str] = []
    with daemon.http() as http:
        for body in (chat_body(), chat_body(stream=True)):
            response = http.post("/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {CLIENT_CANARY}", "x-request-id": "canary"})
            seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        for path in ("/admin/status", "/metrics", "/v1/models", "/healthz"):
            response = http.get(path)
            seen.append(f"{response.status_code} {response.text}")
    env = {**os.environ, "SAGE_BRIDGE_SOCKET": str(daemon.socket)}
    for args in (["status"], ["status", "--json"]):
        result = subprocess.run([*BRIDGECTL, *args], capture_output=True, text=True, timeout=120, env=env)
        seen.append(result.stdout + result.stderr)
    return seen


def test_daemon_log_format_json_writes_json_lines(spawn_daemon: SpawnDaemon) -> None:
    # Port 9 (discard) has no listener on 127.0.0.1; the request below never reaches a deployment.
    daemon = spawn_daemon(cloud_config("http://127.0.0.1:9/v1"), extra_args=["--log-format", "json"])
    with daemon.http() as http:
        http.post("/v1/chat/completions", json=chat_body("no-such-route"), headers={"x-request-id": "json-1"})
    daemon.stop()
    lines = [json.loads(line) for line in daemon.log().splitlines()]
    rejected = [line for line in lines if line.get("request_id") == "json-1"]
    assert any(line["logger"] == "sage_bridge.daemon" for line in lines)
    assert len(rejected) == 1
    assert rejected[0]["status"] == 404


def test_configure_logging_picks_the_formatter() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.configure_logging("debug", "json")
        json_formatter = root.handlers[0].formatter
        level = root.level
        logs.configure_logging("INFO")
        text_formatter = root.handlers[0].formatter
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
    assert isinstance(json_formatter, JsonFormatter)
    assert level == logging.DEBUG
    assert isinstance(text_formatter, TextFormatter)
