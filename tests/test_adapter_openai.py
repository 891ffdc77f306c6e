"""The OpenAI adapter against the OpenAI mock: chat over aiohttp, embeddings through the openai SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from pydantic import SecretStr

from sage_bridge.config.schema import DeploymentConfig, OpenAIProviderConfig
from sage_bridge.errors import ErrorKind, InvalidRequest, UpstreamError
from sage_bridge.providers.adapter_common import PLACEHOLDER_KEY
from sage_bridge.providers.openai import OpenAIProvider
from sage_bridge.providers.openai_http import USER_AGENT, SSEDecoder, client_timeout
from sage_bridge.types import ChatRequest, EmbeddingRequest, StreamEvent
from tests.mocks import assemble, openai_upstream, token_fields  # noqa: F401  (fixture)
from tests.mocks.base import SSE, Reply, Scripted, ToolCallSpec
from tests.mocks.openai_mock import OpenAIMock, embedding_vector, openai_error

DEPLOYMENT = DeploymentConfig(provider="openai", model="gpt-mock")
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]
TEXT_REPLY = Reply(text="The weather in Paris is sunny and mild today.")
TOOL_REPLY = Reply(
    text="",
    tool_calls=[
        ToolCallSpec("call_A", "get_weather", '{"city": "Paris"}'),
        ToolCallSpec("call_B", "get_weather", '{"city": "Berlin"}'),
    ],
)


def make_provider(mock: OpenAIMock, **config: Any) -> OpenAIProvider:
    settings: dict[str, Any] = {"type": "openai", "api_key": SecretStr(mock.api_key), "base_url": mock.base_url}
    settings.update(config)
    return OpenAIProvider("openai", OpenAIProviderConfig(**settings))


@pytest.fixture
async def provider(openai_upstream: OpenAIMock) -> AsyncIterator[OpenAIProvider]:
    adapter = make_provider(openai_upstream)
    yield adapter
    await adapter.aclose()


def chat_request(**fields: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": "What is the weather?"}]}
    body.update(fields)
    return ChatRequest.model_validate(body)


async def collect(provider: OpenAIProvider, request: ChatRequest, deployment: DeploymentConfig = DEPLOYMENT) -> list[StreamEvent]:
    return [event async for event in provider.stream_chat(request, deployment)]


async def test_chat_returns_text_and_usage(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(TEXT_REPLY)

    result = await provider.chat(chat_request(), DEPLOYMENT)

    assert result.content == TEXT_REPLY.text
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens == 9
    assert result.upstream_model == "gpt-mock"
    assert result.upstream_id.startswith("chatcmpl-mock-")
    assert openai_upstream.last.json["model"] == "gpt-mock"


@pytest.mark.parametrize("reply", [TEXT_REPLY, TOOL_REPLY], ids=["text", "tool_calls"])
async def test_stream_matches_non_streamed(provider: OpenAIProvider, openai_upstream: OpenAIMock, reply: Reply) -> None:
    openai_upstream.enqueue(reply, reply)
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


async def test_stream_tool_deltas_carry_id_once(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(TOOL_REPLY)

    calls = assemble(await collect(provider, chat_request(tools=TOOLS))).tool_calls

    assert [call.index for call in calls] == [0, 1]
    assert all(call.first_fragment_had_id for call in calls)
    assert [call.later_fragments_with_id for call in calls] == [0, 0]


async def test_compatible_server_repeating_ids_is_normalised(
    provider: OpenAIProvider, openai_upstream: OpenAIMock
) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> SSE:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return SSE({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]})

    repeated = {"index": 0, "id": "call_X", "type": "function", "function": {"name": "get_weather"}}
    events = [
        chunk({"role": "assistant", "tool_calls": [{**repeated, "function": {"name": "get_weather", "arguments": '{"city"'}}]}),
        chunk({"tool_calls": [{**repeated, "function": {"name": "get_weather", "arguments": ': "Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        SSE("[DONE]"),
    ]
    openai_upstream.enqueue(Scripted(events=events))

    calls = assemble(await collect(provider, chat_request(tools=TOOLS))).tool_calls

    assert len(calls) == 1
    assert calls[0].later_fragments_with_id == 0
    assert calls[0].parsed_arguments() == {"city": "Oslo"}


@pytest.mark.parametrize("client_options", [None, {"include_usage": False}, {"include_usage": True}])
async def test_stream_always_requests_usage(
    provider: OpenAIProvider, openai_upstream: OpenAIMock, client_options: dict[str, Any] | None
) -> None:
    request = chat_request(stream=True, stream_options=client_options)

    stream = assemble(await collect(provider, request))

    assert openai_upstream.last.json["stream"] is True
    assert openai_upstream.last.json["stream_options"]["include_usage"] is True
    assert len(stream.usages) == 1
    assert stream.usages[0].estimated is False


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls", "content_filter"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_finish_reasons_pass_through(
    provider: OpenAIProvider, openai_upstream: OpenAIMock, finish: str, streamed: bool
) -> None:
    openai_upstream.enqueue(Reply(text="x", finish=finish))

    if streamed:
        reason = assemble(await collect(provider, chat_request())).finish_reason
    else:
        reason = (await provider.chat(chat_request(), DEPLOYMENT)).finish_reason

    assert reason == finish


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_unknown_finish_reason_becomes_stop_with_warning(
    provider: OpenAIProvider, openai_upstream: OpenAIMock, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    openai_upstream.enqueue(Reply(text="x", finish="brand_new_reason"))

    with caplog.at_level(logging.WARNING):
        if streamed:
            reason = assemble(await collect(provider, chat_request())).finish_reason
        else:
            reason = (await provider.chat(chat_request(), DEPLOYMENT)).finish_reason

    assert reason == "stop"
    assert "brand_new_reason" in caplog.text


async def test_cached_tokens_are_a_subset_of_prompt(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 64},
    }
    openai_upstream.enqueue(Reply(usage=usage))

    result = await provider.chat(chat_request(), DEPLOYMENT)

    assert result.usage.prompt_tokens == 100
    assert result.usage.cached_tokens == 64
    assert result.usage.raw["prompt_tokens_details"]["cached_tokens"] == 64


async def test_request_fields_are_forwarded(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    request = chat_request(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Late system note."},
        ],
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["END"],
        max_tokens=33,
        tools=TOOLS,
        tool_choice="required",
        response_format={"type": "json_object"},
    )

    await provider.chat(request, DEPLOYMENT)
    sent = openai_upstream.last.json

    assert [m["role"] for m in sent["messages"]] == ["developer", "user", "system"]
    assert sent["temperature"] == 0.2
    assert sent["top_p"] == 0.9
    assert sent["seed"] == 7
    assert sent["stop"] == ["END"]
    assert sent["max_tokens"] == 33
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["response_format"] == {"type": "json_object"}


async def test_unmodelled_parameters_travel_in_extra_body(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    await provider.chat(chat_request(reasoning_effort="low", logit_bias={"50256": -100}), DEPLOYMENT)

    assert openai_upstream.last.json["reasoning_effort"] == "low"
    assert openai_upstream.last.json["logit_bias"] == {"50256": -100}


async def test_deployment_max_tokens_is_the_default_cap(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    capped = DeploymentConfig(provider="openai", model="gpt-mock", max_tokens=256)

    await provider.chat(chat_request(), capped)
    default_cap = openai_upstream.last.json.get("max_completion_tokens")
    await provider.chat(chat_request(max_completion_tokens=12), capped)
    client_cap = openai_upstream.last.json.get("max_completion_tokens")

    assert default_cap == 256
    assert client_cap == 12


async def test_several_choices_are_rejected(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(n=2), DEPLOYMENT)

    assert '"openai"' in caught.value.message
    assert caught.value.param == "n"
    assert openai_upstream.calls == 0


async def test_no_retries_inside_the_sdk(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(openai_error(500, "boom", error_type="server_error"))

    with pytest.raises(UpstreamError):
        await provider.chat(chat_request(), DEPLOYMENT)

    assert openai_upstream.calls == 1


async def test_client_is_pooled_across_requests(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    # Non-streamed requests and streams have a pool each, and each request reuses its pool's connection.
    await provider.chat(chat_request(), DEPLOYMENT)
    await collect(provider, chat_request())
    await provider.chat(chat_request(), DEPLOYMENT)
    await collect(provider, chat_request())

    ports = [request.peer_port for request in openai_upstream.requests]
    assert ports[0] == ports[2]
    assert ports[1] == ports[3]
    assert len(set(ports)) == 2


async def test_key_none_sends_a_placeholder() -> None:
    async with OpenAIMock(api_key=PLACEHOLDER_KEY) as mock:
        adapter = make_provider(mock, api_key=SecretStr("none"))
        result = await adapter.chat(chat_request(), DEPLOYMENT)
        await adapter.aclose()

    assert adapter.disabled_reason() is None
    assert result.content == "Hello from the mock."
    assert mock.last.headers["Authorization"] == f"Bearer {PLACEHOLDER_KEY}"


@pytest.mark.parametrize("key", [None, SecretStr("")], ids=["unset", "empty"])
async def test_missing_key_disables_provider(key: SecretStr | None) -> None:
    adapter = OpenAIProvider("openai", OpenAIProviderConfig(type="openai", api_key=key))

    reason = adapter.disabled_reason()
    with pytest.raises(UpstreamError) as caught:
        await adapter.chat(chat_request(), DEPLOYMENT)

    assert reason is not None
    assert 'provider "openai"' in reason
    assert "api_key is empty" in reason
    assert caught.value.kind is ErrorKind.AUTH


def _chunk(delta: dict[str, Any], finish: str | None = None) -> SSE:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return SSE({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]})


async def test_stream_without_usage_is_estimated(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    # A compatible server that ignores stream_options and sends no usage chunk.
    events = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hello there friend"}), _chunk({}, "stop"), SSE("[DONE]")]
    openai_upstream.enqueue(Scripted(events=events))

    stream = assemble(await collect(provider, chat_request()))

    assert stream.finish_reason == "stop"
    assert len(stream.usages) == 1
    assert stream.usages[0].estimated is True
    assert stream.usages[0].prompt_tokens > 0
    assert stream.usages[0].completion_tokens == 5


async def test_response_without_usage_is_estimated(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    }
    openai_upstream.enqueue(Scripted(body=body))

    result = await provider.chat(chat_request(), DEPLOYMENT)

    assert result.usage.estimated is True
    assert result.usage.completion_tokens == 1


async def test_stream_ending_without_finish_is_an_error(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(Scripted(events=[_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"})]))

    with pytest.raises(UpstreamError) as caught:
        await collect(provider, chat_request())

    assert caught.value.kind is ErrorKind.CONNECTION


async def test_embeddings_return_float_vectors(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    request = EmbeddingRequest(model="embed", input=["first text", "second"], dimensions=4)

    result = await provider.embed(request, DEPLOYMENT)

    assert len(result.vectors) == 2
    assert result.vectors[0] == pytest.approx(embedding_vector("first text", 4), abs=1e-6)
    assert result.vectors[1] == pytest.approx(embedding_vector("second", 4), abs=1e-6)
    assert all(isinstance(value, float) for value in result.vectors[0])
    assert result.usage.prompt_tokens == 3
    assert openai_upstream.last.json["encoding_format"] == "base64"
    assert openai_upstream.last.json["dimensions"] == 4


async def test_embeddings_of_one_string(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    result = await provider.embed(EmbeddingRequest(model="embed", input="just one"), DEPLOYMENT)

    assert len(result.vectors) == 1
    assert openai_upstream.last.json["input"] == "just one"


async def test_early_stop_closes_the_stream(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(Reply(text="one two three four five six seven", chunk_size=2, event_delay=0.05))

    stream = cast(AsyncGenerator[StreamEvent, None], provider.stream_chat(chat_request(), DEPLOYMENT))
    headers = await anext(stream)
    first = await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if openai_upstream.in_flight == 0:
            break
        await asyncio.sleep(0.02)

    assert headers.rate_limits is not None
    assert first.content == "on"
    assert openai_upstream.in_flight == 0


async def test_embeddings_without_usage_are_estimated(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    body = {"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]}
    openai_upstream.enqueue(Scripted(body=body))

    result = await provider.embed(EmbeddingRequest(model="embed", input="twelve chars"), DEPLOYMENT)

    assert result.vectors == [[0.5, 0.25]]
    assert result.usage.estimated is True
    assert result.usage.prompt_tokens == 3


def test_timeouts_come_from_config() -> None:
    config = OpenAIProviderConfig(type="openai", api_key=SecretStr("sk-test"), connect_timeout=1.5, read_timeout=42.0)

    timeout = client_timeout(config)

    assert timeout.sock_connect == 1.5
    assert timeout.sock_read == 42.0
    assert timeout.total is None


async def test_read_timeout_applies_mid_stream(openai_upstream: OpenAIMock) -> None:
    adapter = make_provider(openai_upstream, read_timeout=0.2)
    openai_upstream.enqueue(Reply(text="one two three", chunk_size=4, event_delay=1.0))

    with pytest.raises(UpstreamError) as caught:
        await collect(adapter, chat_request())
    await adapter.aclose()

    assert caught.value.kind is ErrorKind.TIMEOUT


def test_sse_decoder_joins_split_blocks() -> None:
    decoder = SSEDecoder()

    first = decoder.feed(b'data: {"a"')
    second = decoder.feed(b': 1}\r\n\r\ndata: [DONE]\n\n')

    assert first == []
    assert second == [(None, b'{"a": 1}'), (None, b"[DONE]")]


def test_sse_decoder_skips_comments_and_ids() -> None:
    decoder = SSEDecoder()

    events = decoder.feed(b": keep-alive\n\nid: 7\nretry: 10\ndata: x\n\n")

    assert events == [(None, b"x")]


def test_sse_decoder_keeps_event_names_and_lines() -> None:
    decoder = SSEDecoder()

    events = decoder.feed(b"event: error\ndata: first\ndata: second\n\ndata:tight\n\n")

    assert events == [("error", b"first\nsecond"), (None, b"tight")]


def test_sse_decoder_drops_unterminated_event() -> None:
    decoder = SSEDecoder()

    events = decoder.feed(b"data: never finished\n")

    assert events == []


async def test_error_event_named_error_fails_stream(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    error_body = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "param": None, "code": None}}
    openai_upstream.enqueue(Scripted(events=[_chunk({"content": "Hel"}), SSE(error_body, event="error")]))

    with pytest.raises(UpstreamError) as caught:
        await collect(provider, chat_request())

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert "Rate limit reached" in caught.value.message


async def test_request_headers_name_organization_and_project(openai_upstream: OpenAIMock) -> None:
    adapter = make_provider(openai_upstream, organization="org-mock", project="proj-mock")

    await adapter.chat(chat_request(), DEPLOYMENT)
    await adapter.aclose()

    assert openai_upstream.last.headers["Authorization"] == f"Bearer {openai_upstream.api_key}"
    assert openai_upstream.last.headers["OpenAI-Organization"] == "org-mock"
    assert openai_upstream.last.headers["OpenAI-Project"] == "proj-mock"
    assert openai_upstream.last.headers["Content-Type"] == "application/json"


async def test_chat_and_stream_send_the_bridge_user_agent(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    await provider.chat(chat_request(), DEPLOYMENT)
    await collect(provider, chat_request())

    chat, stream = openai_upstream.requests
    assert chat.headers["User-Agent"] == USER_AGENT
    assert stream.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("sage-model-bridge/")


async def test_rate_limit_headers_are_reported(provider: OpenAIProvider, openai_upstream: OpenAIMock) -> None:
    headers = {"x-ratelimit-remaining-requests": "99", "x-request-id": "req-1"}
    openai_upstream.enqueue(Reply(text="hi", headers=headers), Reply(text="hi", headers=headers))

    result = await provider.chat(chat_request(), DEPLOYMENT)
    first_event = (await collect(provider, chat_request()))[0]

    assert result.rate_limits == {"x-ratelimit-remaining-requests": "99"}
    assert first_event.rate_limits == {"x-ratelimit-remaining-requests": "99"}


def test_chat_adapter_loads_no_sdk() -> None:
    # The SDK and httpx2 added about 16 MB to the idle daemon; only an embeddings request loads them.
    script = (
        "import sys\n"
        "from pydantic import SecretStr\n"
        "from sage_bridge.config.schema import OpenAIProviderConfig\n"
        "from sage_bridge.providers.openai import OpenAIProvider\n"
        "OpenAIProvider('p', OpenAIProviderConfig(type='openai', api_key=SecretStr('sk-test')))\n"
        "print(sorted(name for name in ('openai', 'httpx2') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
