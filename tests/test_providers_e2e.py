"""Every provider through the real daemon, seen by the official openai client as OpenAI itself.

The reference for "what OpenAI would send" is the OpenAI mock's own stream for the same reply,
read directly with the openai SDK; the bridge's stream from each provider must match it chunk
for chunk once ids and timestamps are set aside.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.conftest import SpawnDaemon
from tests.harness import Daemon
from tests.mocks.anthropic_mock import AnthropicMock
from tests.mocks.base import MockUpstream, Reply, ToolCallSpec, word_count
from tests.mocks.cohere_mock import CohereMock
from tests.mocks.openai_mock import OpenAIMock

TEXT_REPLY = Reply(text="The capital of France is Paris.")
TOOL_REPLY = Reply(text="", tool_calls=[
    ToolCallSpec("call_A", "get_weather", '{"city": "Paris"}'),
    ToolCallSpec("call_B", "get_time", '{"zone": "Europe/Paris"}'),
])
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}},
]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, MockUpstream]]:
    async with OpenAIMock() as oai, AnthropicMock() as ant, CohereMock() as coh, OpenAIMock() as reference:
        yield {"openai": oai, "anthropic": ant, "cohere": coh, "reference": reference}


def bridge_config(upstreams: dict[str, MockUpstream]) -> str:
    lines = ["version: 1", "providers:"]
    for kind in ("openai", "anthropic", "cohere"):
        mock = upstreams[kind]
        lines.append(f"  {kind}: {{type: {kind}, base_url: '{mock.base_url}', api_key: {mock.api_key}}}")
    lines += [
        "models:",
        "  via-openai: {provider: openai, model: gpt-4o}",
        "  via-anthropic: {provider: anthropic, model: claude-haiku-4-5, max_tokens: 1024}",
        "  via-cohere: {provider: cohere, model: command-r-08-2024}",
        "routes:",
        "  openai: {targets: [via-openai], terminal: none}",
        "  anthropic: {targets: [via-anthropic], terminal: none}",
        "  cohere: {targets: [via-cohere], terminal: none}",
    ]
    return "\n".join(lines) + "\n"


def normalise(chunks: list[Any]) -> list[dict[str, Any]]:
    """Keep what a client reads from each chunk: choices (delta, finish) and whether usage came."""
    shape = []
    for chunk in chunks:
        data = chunk.model_dump(exclude_none=True)
        shape.append({
            "choices": [{"delta": c.get("delta", {}), "finish_reason": c.get("finish_reason")} for c in data.get("choices", [])],
            "usage": "usage" in data,
        })
    return shape


async def reference_stream(upstreams: dict[str, MockUpstream], reply: Reply, **params: Any) -> list[Any]:
    mock = upstreams["reference"]
    mock.enqueue(reply)
    client = openai.AsyncOpenAI(base_url=mock.base_url, api_key=mock.api_key, max_retries=0)
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **params)
    return [chunk async for chunk in stream]


async def bridge_stream(daemon: Daemon, route: str, **params: Any) -> list[Any]:
    stream = await daemon.async_openai_client().chat.completions.create(model=route, messages=MESSAGES, stream=True, **params)
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "cohere"])
async def test_text_stream_matches_openai_and_non_stream(spawn_daemon: SpawnDaemon, upstreams: dict[str, MockUpstream],
                                                         provider: str) -> None:
    daemon = spawn_daemon(bridge_config(upstreams))
    options = {"stream_options": {"include_usage": True}}
    upstreams[provider].enqueue(TEXT_REPLY, TEXT_REPLY)
    chunks = await bridge_stream(daemon, provider, **options)
    whole = await daemon.async_openai_client().chat.completions.create(model=provider, messages=MESSAGES)
    reference = await reference_stream(upstreams, TEXT_REPLY, **options)

    assert normalise(chunks) == normalise(reference)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("provider", ["openai", "anthropic", "cohere"])
async def test_tool_call_stream_matches_openai_and_non_stream(spawn_daemon: SpawnDaemon,
                                                              upstreams: dict[str, MockUpstream], provider: str) -> None:
    daemon = spawn_daemon(bridge_config(upstreams))
    upstreams[provider].enqueue(TOOL_REPLY, TOOL_REPLY)
    chunks = await bridge_stream(daemon, provider, tools=TOOLS)
    whole = await daemon.async_openai_client().chat.completions.create(model=provider, messages=MESSAGES, tools=TOOLS)
    reference = await reference_stream(upstreams, TOOL_REPLY, tools=TOOLS)

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    expected = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in whole.choices[0].message.tool_calls or []]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == expected
    assert sorted(calls) == [0, 1]
    assert whole.choices[0].finish_reason == "tool_calls"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert [c["choices"][0]["delta"].keys() >= {"role"} for c in normalise(chunks)][0]
    assert len(normalise(chunks)) == len(normalise(reference))


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}, {"include_usage": True}])
async def test_usage_is_always_requested_but_only_shown_when_asked(
    spawn_daemon: SpawnDaemon, upstreams: dict[str, MockUpstream], stream_options: dict[str, bool] | None
) -> None:
    daemon = spawn_daemon(bridge_config(upstreams))
    upstream = upstreams["openai"]
    params = {} if stream_options is None else {"stream_options": stream_options}
    chunks = await bridge_stream(daemon, "openai", **params)
    usage = await daemon_usage(daemon)

    assert upstream.last.json["stream_options"] == {"include_usage": True}
    assert usage == (5 + word_count(upstream.last.json["messages"]), word_count(Reply().text))
    wants_usage = bool(stream_options and stream_options["include_usage"])
    assert any(not chunk.choices for chunk in chunks) is wants_usage
    assert (chunks[-1].usage is not None) is wants_usage


async def daemon_usage(daemon: Daemon) -> tuple[int, int]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "sage_bridge.cli.main", "--socket", str(daemon.socket), "usage",
                             "--by", "route", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [line] = json.loads(result.stdout)["lines"]
    return line["prompt_tokens"], line["completion_tokens"]



async def test_openai_embeddings_float_and_base64(spawn_daemon: SpawnDaemon, upstreams: dict[str, MockUpstream]) -> None:
    daemon = spawn_daemon(bridge_config(upstreams), start=False)
    daemon.config.write_text(daemon.config.read_text().replace(
        "routes:", "  openai-embedder: {provider: openai, model: text-embedding-3-small}\nroutes:"))
    daemon.start()
    client = daemon.async_openai_client()
    as_float = await client.embeddings.create(model="openai-embedder", input=["alpha", "beta"], encoding_format="float")
    as_base64 = await client.embeddings.create(model="openai-embedder", input=["alpha", "beta"])
    assert [item.index for item in as_float.data] == [0, 1]
    assert as_base64.data[1].embedding == pytest.approx(as_float.data[1].embedding, rel=1e-6)
    assert as_float.usage.prompt_tokens > 0


async def test_cohere_embeddings_split_into_batches_of_96(spawn_daemon: SpawnDaemon,
                                                          upstreams: dict[str, MockUpstream]) -> None:
    daemon = spawn_daemon(bridge_config(upstreams), start=False)
    daemon.config.write_text(daemon.config.read_text().replace(
        "routes:", "  cohere-embedder: {provider: cohere, model: embed-v4.0, input_type: search_query}\nroutes:"))
    daemon.start()
    texts = [f"text number {i}" for i in range(100)]
    result = await daemon.async_openai_client().embeddings.create(model="cohere-embedder", input=texts, encoding_format="float")
    upstream = upstreams["cohere"]
    batches = [request.json for request in upstream.requests if request.path == "/v2/embed"]
    assert [len(batch["texts"]) for batch in batches] == [96, 4]
    assert all(batch["input_type"] == "search_query" for batch in batches)
    assert len(result.data) == 100
    assert result.data[99].index == 99
