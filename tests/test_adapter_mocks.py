"""The mock upstreams behave like the real APIs where the adapters depend on it: they reject
malformed requests, frame streams per provider, and follow their script."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.mocks import anthropic_upstream, cohere_upstream, openai_upstream  # noqa: F401  (fixtures)
from tests.mocks.anthropic_mock import AnthropicMock
from tests.mocks.base import SSE, Reply, Scripted, ToolCallSpec
from tests.mocks.cohere_mock import CohereMock
from tests.mocks.openai_mock import OpenAIMock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def anthropic_headers(mock: AnthropicMock) -> dict[str, str]:
    return {"x-api-key": mock.api_key, "anthropic-version": "2026-10-21"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


def anthropic_body(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-mock", "max_tokens": 100, "messages": messages, **fields}


async def test_anthropic_requires_max_tokens(anthropic_upstream: AnthropicMock, http: aiohttp.ClientSession) -> None:
    body = {"model": "claude-mock", "messages": [{"role": "user", "content": "hi"}]}

    status, error = await post(http, f"{anthropic_upstream.base_url}/v1/messages", body, anthropic_headers(anthropic_upstream))

    assert status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "roles must alternate"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2"}]},
            ],
            "unexpected `tool_use_id`",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": "no result"},
            ],
            "without `tool_result` blocks",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "tool_result", "tool_use_id": "toolu_1"}]},
            ],
            "must come before",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": ""}]}], "non-whitespace"),
    ],
    ids=["two_user_turns", "unknown_tool_result", "missing_tool_result", "text_before_result", "empty_text"],
)
async def test_anthropic_rejects_malformed_turns(
    anthropic_upstream: AnthropicMock, http: aiohttp.ClientSession, messages: list[dict[str, Any]], fragment: str
) -> None:
    url = f"{anthropic_upstream.base_url}/v1/messages"

    status, error = await post(http, url, anthropic_body(messages), anthropic_headers(anthropic_upstream))

    assert status == 400
    assert fragment in error["error"]["message"]


async def test_anthropic_rejects_sampling_parameters(
    anthropic_upstream: AnthropicMock, http: aiohttp.ClientSession
) -> None:
    body = anthropic_body([{"role": "user", "content": "a"}], temperature=0.5)

    status, error = await post(http, f"{anthropic_upstream.base_url}/v1/messages", body, anthropic_headers(anthropic_upstream))

    assert status == 400
    assert "temperature" in error["error"]["message"]


@pytest.mark.parametrize(
    ("mock_class", "path"),
    [(OpenAIMock, "/chat/completions"), (AnthropicMock, "/v1/messages"), (CohereMock, "/v2/chat")],
    ids=["openai", "anthropic", "cohere"],
)
async def test_wrong_key_is_401(mock_class: type[Any], path: str, http: aiohttp.ClientSession) -> None:
    headers = {**bearer("wrong-key-123"), "x-api-key": "wrong-key-123", "anthropic-version": "2026-10-21"}
    async with mock_class() as mock:
        status, body = await post(http, mock.base_url + path, {"model": "m", "messages": []}, headers)

    assert status == 401
    assert body != {}


async def test_openai_rejects_unanswered_tool_call(openai_upstream: OpenAIMock, http: aiohttp.ClientSession) -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "b"},
    ]

    status, error = await post(
        http, f"{openai_upstream.base_url}/chat/completions", {"model": "m", "messages": messages}, bearer(openai_upstream.api_key)
    )

    assert status == 400
    assert "call_1" in error["error"]["message"]


async def test_cohere_rejects_more_than_96_texts(cohere_upstream: CohereMock, http: aiohttp.ClientSession) -> None:
    body = {"model": "embed", "input_type": "search_document", "texts": ["x"] * 97, "embedding_types": ["float"]}

    status, error = await post(http, f"{cohere_upstream.base_url}/v2/embed", body, bearer(cohere_upstream.api_key))

    assert status == 400
    assert "at most 96" in error["message"]


async def stream_text(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> str:
    async with http.post(url, json=body, headers=headers) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return await response.text()


async def test_openai_stream_framing(openai_upstream: OpenAIMock, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "stream": True, "stream_options": {"include_usage": True}}

    text = await stream_text(http, f"{openai_upstream.base_url}/chat/completions", body, bearer(openai_upstream.api_key))
    frames = [frame for frame in text.split("\n\n") if frame]

    assert all(frame.startswith("data: ") for frame in frames)
    assert "event:" not in text
    assert frames[-1] == "data: [DONE]"
    assert '"usage"' in frames[-2]


async def test_anthropic_stream_framing(anthropic_upstream: AnthropicMock, http: aiohttp.ClientSession) -> None:
    body = anthropic_body([{"role": "user", "content": "a"}], stream=True)

    text = await stream_text(http, f"{anthropic_upstream.base_url}/v1/messages", body, anthropic_headers(anthropic_upstream))
    frames = [frame.split("\n") for frame in text.split("\n\n") if frame]

    assert all(lines[0].startswith("event: ") and lines[1].startswith("data: ") for lines in frames)
    assert all(f'"type": "{lines[0][len("event: "):]}"' in lines[1] for lines in frames)
    assert frames[-1][0] == "event: message_stop"
    assert "[DONE]" not in text


async def test_cohere_stream_framing(cohere_upstream: CohereMock, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "stream": True}

    text = await stream_text(http, f"{cohere_upstream.base_url}/v2/chat", body, bearer(cohere_upstream.api_key))
    frames = [frame.split("\n") for frame in text.split("\n\n") if frame]

    assert all(f'"type": "{lines[0][len("event: "):]}"' in lines[1] for lines in frames)
    assert frames[0][0] == "event: message-start"
    assert frames[-1][0] == "event: message-end"


async def test_queue_then_default(openai_upstream: OpenAIMock, http: aiohttp.ClientSession) -> None:
    openai_upstream.enqueue(Reply(text="first"), lambda request: Scripted(status=418, body={"error": {"message": "teapot"}}))
    url = f"{openai_upstream.base_url}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}]}

    answers = [await post(http, url, body, bearer(openai_upstream.api_key)) for _ in range(3)]

    assert answers[0][1]["choices"][0]["message"]["content"] == "first"
    assert answers[1][0] == 418
    assert answers[2][1]["choices"][0]["message"]["content"] == "Hello from the mock."
    assert openai_upstream.calls == 3
    assert [request.json["messages"][0]["content"] for request in openai_upstream.requests] == ["a", "a", "a"]


async def test_max_in_flight_is_counted(openai_upstream: OpenAIMock, http: aiohttp.ClientSession) -> None:
    openai_upstream.enqueue(*(Reply(delay=0.2) for _ in range(3)))
    url = f"{openai_upstream.base_url}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}]}

    await asyncio.gather(*(post(http, url, body, bearer(openai_upstream.api_key)) for _ in range(3)))

    assert openai_upstream.max_in_flight == 3
    assert openai_upstream.in_flight == 0


async def test_cut_after_drops_the_connection(openai_upstream: OpenAIMock, http: aiohttp.ClientSession) -> None:
    openai_upstream.enqueue(Reply(text="abcdefghijkl", chunk_size=1, cut_after=3))
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "stream": True}

    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{openai_upstream.base_url}/chat/completions", json=body, headers=bearer(openai_upstream.api_key)) as response:
            await response.read()


async def test_scripted_sse_events_are_sent_verbatim(cohere_upstream: CohereMock, http: aiohttp.ClientSession) -> None:
    cohere_upstream.enqueue(Scripted(events=[SSE({"type": "message-end", "delta": {}}, event="message-end")]))
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "stream": True}

    text = await stream_text(http, f"{cohere_upstream.base_url}/v2/chat", body, bearer(cohere_upstream.api_key))

    assert text == 'event: message-end\ndata: {"type": "message-end", "delta": {}}\n\n'


async def test_anthropic_reply_renders_tool_use(anthropic_upstream: AnthropicMock, http: aiohttp.ClientSession) -> None:
    anthropic_upstream.enqueue(Reply(text="", tool_calls=[ToolCallSpec("toolu_1", "f", '{"x": 1}')]))

    status, body = await post(
        http, f"{anthropic_upstream.base_url}/v1/messages", anthropic_body([{"role": "user", "content": "a"}]), anthropic_headers(anthropic_upstream)
    )

    assert status == 200
    assert body["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}]
    assert body["stop_reason"] == "tool_use"


def test_standalone_process_serves() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mocks.openai_mock", "--port", "0", "--api-key", "sk-standalone-123"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        answer = asyncio.run(_ask(base_url, "sk-standalone-123"))
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/v1")
    assert answer == "Hello from the mock."


async def _ask(base_url: str, key: str) -> str:
    async with aiohttp.ClientSession() as session:
        body = {"model": "m", "messages": [{"role": "user", "content": "a"}]}
        status, answer = await post(session, f"{base_url}/chat/completions", body, bearer(key))
    assert status == 200
    return str(answer["choices"][0]["message"]["content"])
