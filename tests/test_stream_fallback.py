"""Streams on the real daemon: fallback before the first delta, an error event after it, and the
status a client gets when every target fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.conftest import SpawnDaemon
from tests.harness import Daemon
from tests.mocks.base import SSE, Reply, Scripted
from tests.mocks.openai_mock import OpenAIMock
from tests.routing_env import openai_providers


def chunk(delta: dict[str, Any], finish: str | None = None) -> SSE:
    return SSE({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})


@pytest.fixture
async def mocks() -> AsyncIterator[tuple[OpenAIMock, OpenAIMock]]:
    async with OpenAIMock() as primary, OpenAIMock() as backup:
        yield primary, backup


def start(spawn_daemon: SpawnDaemon, mocks: tuple[OpenAIMock, OpenAIMock]) -> Daemon:
    primary, backup = mocks
    config = "version: 1\n" + openai_providers({"p1": primary, "p2": backup}) + """\
retry_policies:
  none: {attempts: 1}
models:
  primary: {provider: p1, model: gpt-4o}
  backup: {provider: p2, model: gpt-4o-mini}
routes:
  chat: {targets: [primary, backup], terminal: none, retry: none}
"""
    return spawn_daemon(config)


async def stream_events(daemon: Daemon) -> tuple[int, list[str]]:
    transport = httpx2.AsyncHTTPTransport(uds=str(daemon.socket))
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    async with httpx2.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as client:
        response = await client.post("/v1/chat/completions", json=body)
    return response.status_code, [event for event in response.text.split("\n\n") if event]


async def test_break_before_content_falls_back_invisibly(spawn_daemon: SpawnDaemon, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(Scripted(events=[chunk({"role": "assistant", "content": ""})], cut_after=1))
    backup.enqueue(Reply(text="Hello from the backup"))
    daemon = start(spawn_daemon, mocks)
    status, events = await stream_events(daemon)
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    roles = [p for p in payloads if p["choices"] and p["choices"][0]["delta"].get("role")]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert status == 200
    assert len(roles) == 1
    assert events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1
    assert text == "Hello from the backup"
    assert primary.calls == 1
    assert backup.calls == 1


async def test_break_after_content_ends_with_error_event(spawn_daemon: SpawnDaemon, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(Scripted(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})], cut_after=2))
    daemon = start(spawn_daemon, mocks)
    status, events = await stream_events(daemon)
    payloads = [json.loads(event.removeprefix("data: ")) for event in events if event != "data: [DONE]"]
    assert status == 200
    assert "data: [DONE]" not in events
    assert "error" in payloads[-1]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p.get("choices")) == "Hel"
    assert backup.calls == 0


async def test_every_target_failing_before_output_is_json_error(spawn_daemon: SpawnDaemon,
                                                               mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(Scripted(events=[chunk({"role": "assistant", "content": ""})], cut_after=1))
    backup.enqueue(Scripted(status=500, body={"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}))
    daemon = start(spawn_daemon, mocks)
    status, events = await stream_events(daemon)
    body = json.loads(events[0])
    assert status == 502
    assert [a["deployment"] for a in body["error"]["attempts"]] == ["primary", "backup"]
    assert body["error"]["code"] == "all_targets_failed"


async def test_all_rate_limited_is_429(spawn_daemon: SpawnDaemon, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    for mock, wait in ((primary, "9"), (backup, "2")):
        mock.enqueue(Scripted(status=429, headers={"retry-after": wait}, body={
            "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}))
    daemon = start(spawn_daemon, mocks)

    with pytest.raises(openai.RateLimitError) as caught:
        await daemon.async_openai_client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Hi"}])

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    assert "rate limited upstream" in caught.value.message
