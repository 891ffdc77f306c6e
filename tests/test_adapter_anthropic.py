"""The Anthropic adapter against the Anthropic mock, through the real anthropic SDK."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from pydantic import SecretStr

from sage_bridge.config.schema import AnthropicProviderConfig, DeploymentConfig
from sage_bridge.errors import InvalidRequest
from sage_bridge.providers.anthropic import AnthropicProvider
from sage_bridge.types import ChatRequest, StreamEvent
from tests.mocks import anthropic_upstream, assemble, token_fields  # noqa: F401  (fixture)
from tests.mocks.anthropic_mock import AnthropicMock
from tests.mocks.base import Reply, ToolCallSpec

DEPLOYMENT = DeploymentConfig(provider="anthropic", model="claude-mock")
DROPPING = DeploymentConfig(provider="anthropic", model="claude-mock", unsupported_params="drop")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TEXT_REPLY = Reply(text="The weather in Paris is sunny and mild today.")
TOOL_REPLY = Reply(
    text="Let me look that up.",
    tool_calls=[
        ToolCallSpec("toolu_A", "get_weather", '{"city": "Paris"}'),
        ToolCallSpec("toolu_B", "get_weather", '{"city": "Berlin", "unit": "celsius"}'),
    ],
    chunk_size=5,
)


def make_provider(mock: AnthropicMock, **config: Any) -> AnthropicProvider:
    settings: dict[str, Any] = {"type": "anthropic", "api_key": SecretStr(mock.api_key), "base_url": mock.base_url}
    settings.update(config)
    return AnthropicProvider("anthropic", AnthropicProviderConfig(**settings))


@pytest.fixture
async def provider(anthropic_upstream: AnthropicMock) -> AsyncIterator[AnthropicProvider]:
    adapter = make_provider(anthropic_upstream)
    yield adapter
    await adapter.aclose()


def chat_request(**fields: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": "What is the weather?"}]}
    body.update(fields)
    return ChatRequest.model_validate(body)


async def collect(
    provider: AnthropicProvider, request: ChatRequest, deployment: DeploymentConfig = DEPLOYMENT
) -> list[StreamEvent]:
    return [event async for event in provider.stream_chat(request, deployment)]


@pytest.mark.parametrize("reply", [TEXT_REPLY, TOOL_REPLY], ids=["text", "tool_calls"])
async def test_stream_matches_non_streamed(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock, reply: Reply
) -> None:
    anthropic_upstream.enqueue(reply, reply)
    request = chat_request(tools=TOOLS)

    whole = await provider.chat(request, DEPLOYMENT)
    streamed = assemble(await collect(provider, request))

    assert streamed.content == whole.content
    assert [(c.id, c.name, c.parsed_arguments()) for c in streamed.tool_calls] == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls
    ]
    assert streamed.finish_reasons == [whole.finish_reason]
    assert [token_fields(u) for u in streamed.usages] == [token_fields(whole.usage)]
    assert streamed.tail == ["finish", "usage"]


async def test_tool_blocks_indexed_from_zero(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock
) -> None:
    anthropic_upstream.enqueue(TOOL_REPLY)

    stream = assemble(await collect(provider, chat_request(tools=TOOLS)))

    assert stream.content == "Let me look that up."
    assert [call.index for call in stream.tool_calls] == [0, 1]
    assert [call.id for call in stream.tool_calls] == ["toolu_A", "toolu_B"]
    assert [call.name for call in stream.tool_calls] == ["get_weather", "get_weather"]
    assert stream.tool_calls[0].parsed_arguments() == {"city": "Paris"}
    assert stream.tool_calls[1].parsed_arguments() == {"city": "Berlin", "unit": "celsius"}
    assert [call.later_fragments_with_id for call in stream.tool_calls] == [0, 0]
    assert stream.finish_reason == "tool_calls"


async def test_tool_turn_becomes_three_alternating_messages(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock
) -> None:
    request = chat_request(
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris and Berlin?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                    {"id": "toolu_B", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_A", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_B", "content": "rain"},
            {"role": "user", "content": "Which is warmer?"},
        ],
    )

    result = await provider.chat(request, DEPLOYMENT)
    sent = anthropic_upstream.last.json["messages"]

    assert result.content == "Hello from the mock."
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert [block["type"] for block in sent[1]["content"]] == ["tool_use", "tool_use"]
    assert [block["type"] for block in sent[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert [block.get("tool_use_id") for block in sent[2]["content"][:2]] == ["toolu_A", "toolu_B"]
    assert sent[1]["content"][0]["input"] == {"city": "Paris"}


async def test_system_and_developer_messages_join_system(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock
) -> None:
    request = chat_request(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "How are you?"},
        ]
    )

    await provider.chat(request, DEPLOYMENT)
    sent = anthropic_upstream.last.json

    assert sent["system"] == "You are terse.\n\nAnswer in French."
    assert [message["role"] for message in sent["messages"]] == ["user"]
    assert [block["text"] for block in sent["messages"][0]["content"]] == ["Hi", "How are you?"]


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_finish_reasons_are_translated(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock, native: str, expected: str, streamed: bool
) -> None:
    anthropic_upstream.enqueue(Reply(text="x", finish=native))
    request = chat_request(stop=["END"])

    if streamed:
        reason = assemble(await collect(provider, request)).finish_reason
    else:
        reason = (await provider.chat(request, DEPLOYMENT)).finish_reason

    assert reason == expected


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_pause_turn_becomes_stop_with_warning(
    provider: AnthropicProvider,
    anthropic_upstream: AnthropicMock,
    streamed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    anthropic_upstream.enqueue(Reply(text="x", finish="pause_turn"))

    with caplog.at_level(logging.WARNING):
        if streamed:
            reason = assemble(await collect(provider, chat_request())).finish_reason
        else:
            reason = (await provider.chat(chat_request(), DEPLOYMENT)).finish_reason

    assert reason == "stop"
    assert "pause_turn" in caplog.text


CACHED_USAGE = {
    "input_tokens": 10,
    "output_tokens": 25,
    "cache_creation_input_tokens": 20,
    "cache_read_input_tokens": 30,
}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_usage_counts_cache_reads_and_writes(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock, streamed: bool
) -> None:
    anthropic_upstream.enqueue(Reply(text="hi", usage=CACHED_USAGE))

    if streamed:
        usage = assemble(await collect(provider, chat_request())).usage
    else:
        usage = (await provider.chat(chat_request(), DEPLOYMENT)).usage

    assert usage is not None
    assert usage.prompt_tokens == 60
    assert usage.cached_tokens == 30
    assert usage.cache_write_tokens == 20
    # The mock's message_start reports 1 output token and message_delta the total of 25.
    assert usage.completion_tokens == 25
    assert usage.raw["cache_read_input_tokens"] == 30


@pytest.mark.parametrize(
    ("request_fields", "deployment", "expected"),
    [
        ({}, DEPLOYMENT, 4096),
        ({}, DeploymentConfig(provider="anthropic", model="claude-mock", max_tokens=1000), 1000),
        ({"max_tokens": 50}, DeploymentConfig(provider="anthropic", model="claude-mock", max_tokens=1000), 50),
        ({"max_completion_tokens": 70}, DEPLOYMENT, 70),
    ],
)
async def test_max_tokens_is_always_sent(
    provider: AnthropicProvider,
    anthropic_upstream: AnthropicMock,
    request_fields: dict[str, Any],
    deployment: DeploymentConfig,
    expected: int,
) -> None:
    await provider.chat(chat_request(**request_fields), deployment)

    assert anthropic_upstream.last.json["max_tokens"] == expected


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 0.5}, {"top_p": 0.9}, {"seed": 3}, {"response_format": {"type": "json_object"}}, {"logprobs": True}],
    ids=["temperature", "top_p", "seed", "json_object", "extra"],
)
async def test_unsupported_parameter_is_rejected(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock, fields: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(**fields), DEPLOYMENT)

    assert caught.value.param == next(iter(fields))
    assert '"anthropic"' in caught.value.message
    assert anthropic_upstream.calls == 0


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 0.5}, {"top_p": 0.9}, {"seed": 3}, {"response_format": {"type": "json_object"}}, {"logprobs": True}],
    ids=["temperature", "top_p", "seed", "json_object", "extra"],
)
async def test_unsupported_parameter_is_dropped(
    provider: AnthropicProvider,
    anthropic_upstream: AnthropicMock,
    fields: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sage_bridge.providers.adapter_common"):
        result = await provider.chat(chat_request(**fields), DROPPING)

    name = next(iter(fields))
    assert result.content == "Hello from the mock."
    assert name not in anthropic_upstream.last.json
    assert f"dropping parameter {name}" in caplog.text


async def test_json_schema_becomes_output_format(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}

    await provider.chat(chat_request(response_format=response_format), DEPLOYMENT)

    assert anthropic_upstream.last.json["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


async def test_several_choices_are_rejected(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(n=3), DEPLOYMENT)

    assert '"anthropic"' in caught.value.message
    assert anthropic_upstream.calls == 0


async def test_images_translate_to_sources(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    content = [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]

    await provider.chat(chat_request(messages=[{"role": "user", "content": content}]), DEPLOYMENT)
    blocks = anthropic_upstream.last.json["messages"][0]["content"]

    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


async def test_tool_choice_and_parallel_flag(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}

    await provider.chat(chat_request(tools=TOOLS, tool_choice=named, parallel_tool_calls=False), DEPLOYMENT)

    assert anthropic_upstream.last.json["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert anthropic_upstream.last.json["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}


async def test_key_is_sent_and_accepted(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    await provider.chat(chat_request(), DEPLOYMENT)

    headers = anthropic_upstream.last.headers
    assert headers["authorization"] == f"Bearer {anthropic_upstream.api_key}"
    assert headers["anthropic-version"]
    assert headers["x-stainless-retry-count"] == "0"


async def test_base_url_ending_in_v1_still_works(anthropic_upstream: AnthropicMock) -> None:
    adapter = make_provider(anthropic_upstream, base_url=anthropic_upstream.base_url + "/v1")

    result = await adapter.chat(chat_request(), DEPLOYMENT)
    await adapter.aclose()

    assert result.content == "Hello from the mock."
    assert anthropic_upstream.last.path == "/v1/messages"


async def test_stream_tool_call_without_arguments_sends_empty_object(
    provider: AnthropicProvider, anthropic_upstream: AnthropicMock
) -> None:
    anthropic_upstream.enqueue(Reply(text="", tool_calls=[ToolCallSpec("toolu_Z", "now", "")]))

    stream = assemble(await collect(provider, chat_request(tools=TOOLS)))

    assert stream.tool_calls[0].parsed_arguments() == {}


async def test_early_stop_closes_the_stream(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    anthropic_upstream.enqueue(Reply(text="one two three four five six seven", chunk_size=2, event_delay=0.05))

    stream = cast(AsyncGenerator[StreamEvent, None], provider.stream_chat(chat_request(), DEPLOYMENT))
    headers = await anext(stream)
    first = await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if anthropic_upstream.in_flight == 0:
            break
        await asyncio.sleep(0.02)

    assert headers.rate_limits is not None
    assert first.content == "on"
    assert anthropic_upstream.in_flight == 0


async def test_client_is_pooled_across_requests(provider: AnthropicProvider, anthropic_upstream: AnthropicMock) -> None:
    await provider.chat(chat_request(), DEPLOYMENT)
    await collect(provider, chat_request())
    await provider.chat(chat_request(), DEPLOYMENT)

    assert len({request.peer_port for request in anthropic_upstream.requests}) == 1


async def test_timeouts_come_from_config(anthropic_upstream: AnthropicMock) -> None:
    adapter = make_provider(anthropic_upstream, connect_timeout=1.5, read_timeout=42.0)

    await adapter.chat(chat_request(), DEPLOYMENT)
    await adapter.aclose()

    assert anthropic_upstream.last.headers["X-Stainless-Read-Timeout"] == "42.0"


async def test_large_output_cap_without_streaming(anthropic_upstream: AnthropicMock) -> None:
    # With the default timeouts the SDK would refuse a non-streamed call that may run long.
    adapter = make_provider(anthropic_upstream, connect_timeout=5.0, read_timeout=600.0)
    large = DeploymentConfig(provider="anthropic", model="claude-mock", max_tokens=64000)

    result = await adapter.chat(chat_request(), large)
    await adapter.aclose()

    assert result.content == "Hello from the mock."
    assert anthropic_upstream.last.json["max_tokens"] == 64000
