"""The Cohere adapter against the Cohere mock, through the real cohere SDK."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from pydantic import SecretStr

from sage_bridge.config.schema import CohereProviderConfig, DeploymentConfig
from sage_bridge.errors import ErrorKind, InvalidRequest, UpstreamError
from sage_bridge.providers.cohere import CohereProvider
from sage_bridge.types import ChatRequest, EmbeddingRequest, StreamEvent
from tests.mocks import assemble, cohere_upstream, token_fields  # noqa: F401  (fixture)
from tests.mocks.base import Reply, Scripted, ToolCallSpec
from tests.mocks.cohere_mock import CohereMock, event, stream_error_end
from tests.mocks.openai_mock import embedding_vector

DEPLOYMENT = DeploymentConfig(provider="cohere", model="command-mock")
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
        ToolCallSpec("get_weather_a1", "get_weather", '{"city": "Paris"}'),
        ToolCallSpec("get_weather_b2", "get_weather", '{"city": "Berlin"}'),
    ],
)


def make_provider(mock: CohereMock) -> CohereProvider:
    config = CohereProviderConfig(type="cohere", api_key=SecretStr(mock.api_key), base_url=mock.base_url)
    return CohereProvider("cohere", config)


@pytest.fixture
async def provider(cohere_upstream: CohereMock) -> AsyncIterator[CohereProvider]:
    adapter = make_provider(cohere_upstream)
    yield adapter
    await adapter.aclose()


def chat_request(**fields: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": "What is the weather?"}]}
    body.update(fields)
    return ChatRequest.model_validate(body)


async def collect(provider: CohereProvider, request: ChatRequest) -> list[StreamEvent]:
    return [item async for item in provider.stream_chat(request, DEPLOYMENT)]


@pytest.mark.parametrize("reply", [TEXT_REPLY, TOOL_REPLY], ids=["text", "tool_calls"])
async def test_stream_matches_non_streamed(provider: CohereProvider, cohere_upstream: CohereMock, reply: Reply) -> None:
    cohere_upstream.enqueue(reply, reply)
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


async def test_stream_tool_calls_are_indexed_from_zero(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    cohere_upstream.enqueue(TOOL_REPLY)

    stream = assemble(await collect(provider, chat_request(tools=TOOLS)))

    assert [call.index for call in stream.tool_calls] == [0, 1]
    assert [call.id for call in stream.tool_calls] == ["get_weather_a1", "get_weather_b2"]
    assert [call.later_fragments_with_id for call in stream.tool_calls] == [0, 0]
    assert stream.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("native", "expected"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls")],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_finish_reasons_are_translated(
    provider: CohereProvider, cohere_upstream: CohereMock, native: str, expected: str, streamed: bool
) -> None:
    cohere_upstream.enqueue(Reply(text="x", finish=native))

    if streamed:
        reason = assemble(await collect(provider, chat_request())).finish_reason
    else:
        reason = (await provider.chat(chat_request(), DEPLOYMENT)).finish_reason

    assert reason == expected


@pytest.mark.parametrize("native", ["ERROR", "TIMEOUT", "SOMETHING_NEW"])
async def test_unknown_finish_becomes_stop_with_warning(
    provider: CohereProvider, cohere_upstream: CohereMock, native: str, caplog: pytest.LogCaptureFixture
) -> None:
    cohere_upstream.enqueue(Reply(text="x", finish=native))

    with caplog.at_level(logging.WARNING):
        result = await provider.chat(chat_request(), DEPLOYMENT)

    assert result.finish_reason == "stop"
    assert native in caplog.text


async def test_error_in_stream_raises(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    start = event({"type": "message-start", "id": "x", "delta": {"message": {"role": "assistant"}}})
    delta = event({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}})
    cohere_upstream.enqueue(Scripted(events=[start, delta, stream_error_end("model crashed")]))

    events: list[StreamEvent] = []
    with pytest.raises(UpstreamError) as caught:
        async for item in provider.stream_chat(chat_request(), DEPLOYMENT):
            events.append(item)

    assert [item.content for item in events] == ["Hel"]
    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert "model crashed" in caught.value.message


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_usage_prefers_billed_units(provider: CohereProvider, cohere_upstream: CohereMock, streamed: bool) -> None:
    usage = {
        "billed_units": {"input_tokens": 12, "output_tokens": 7},
        "tokens": {"input_tokens": 507, "output_tokens": 10},
        "cached_tokens": 5,
    }
    cohere_upstream.enqueue(Reply(text="Paris.", usage=usage))

    if streamed:
        result = assemble(await collect(provider, chat_request())).usage
    else:
        result = (await provider.chat(chat_request(), DEPLOYMENT)).usage

    assert result is not None
    assert result.prompt_tokens == 12
    assert result.completion_tokens == 7
    assert result.cached_tokens == 5
    assert result.raw["tokens"]["input_tokens"] == 507


async def test_usage_falls_back_to_tokens(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    cohere_upstream.enqueue(Reply(text="Paris.", usage={"tokens": {"input_tokens": 40, "output_tokens": 3}}))

    result = await provider.chat(chat_request(), DEPLOYMENT)

    assert result.usage.prompt_tokens == 40
    assert result.usage.completion_tokens == 3


async def test_messages_and_parameters_are_translated(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    request = chat_request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "developer", "content": "Answer in French."},
        ],
        tools=TOOLS,
        tool_choice="required",
        temperature=0.3,
        top_p=0.8,
        seed=11,
        stop=["END"],
        max_tokens=64,
        response_format={"type": "json_object"},
    )

    await provider.chat(request, DEPLOYMENT)
    sent = cohere_upstream.last.json

    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "system"]
    assert "content" not in sent["messages"][2]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert sent["tool_choice"] == "REQUIRED"
    assert sent["temperature"] == 0.3
    assert sent["p"] == 0.8
    assert sent["seed"] == 11
    assert sent["stop_sequences"] == ["END"]
    assert sent["max_tokens"] == 64
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(("choice", "expected"), [("auto", None), ("required", "REQUIRED"), ("none", "NONE")])
async def test_tool_choice_values(
    provider: CohereProvider, cohere_upstream: CohereMock, choice: str, expected: str | None
) -> None:
    await provider.chat(chat_request(tools=TOOLS, tool_choice=choice), DEPLOYMENT)

    assert cohere_upstream.last.json.get("tool_choice") == expected


async def test_named_tool_choice_is_rejected(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}

    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(tools=TOOLS, tool_choice=named), DEPLOYMENT)

    assert caught.value.param == "tool_choice"
    assert "required" in caught.value.message
    assert cohere_upstream.calls == 0


async def test_json_schema_is_sent_with_json_object(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}

    await provider.chat(chat_request(response_format={"type": "json_schema", "json_schema": {"schema": schema}}), DEPLOYMENT)

    assert cohere_upstream.last.json["response_format"] == {"type": "json_object", "json_schema": schema}


async def test_too_many_stop_sequences_are_rejected(provider: CohereProvider) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(stop=["a", "b", "c", "d", "e", "f"]), DEPLOYMENT)

    assert caught.value.param == "stop"


@pytest.mark.parametrize("fields", [{"user": "u-1"}, {"logprobs": True}, {"parallel_tool_calls": False}])
async def test_unsupported_parameter_is_rejected(
    provider: CohereProvider, cohere_upstream: CohereMock, fields: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(**fields), DEPLOYMENT)

    assert caught.value.param == next(iter(fields))
    assert cohere_upstream.calls == 0


async def test_several_choices_are_rejected(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(chat_request(n=2), DEPLOYMENT)

    assert '"cohere"' in caught.value.message
    assert cohere_upstream.calls == 0


async def test_embeddings_are_batched_by_96(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    texts = [f"text number {i}" for i in range(200)]

    result = await provider.embed(EmbeddingRequest(model="embed", input=texts), DEPLOYMENT)

    assert [len(request.json["texts"]) for request in cohere_upstream.requests] == [96, 96, 8]
    assert len(result.vectors) == 200
    assert result.vectors[0] == pytest.approx(embedding_vector(texts[0], 8), abs=1e-6)
    assert result.vectors[199] == pytest.approx(embedding_vector(texts[199], 8), abs=1e-6)
    assert result.usage.prompt_tokens == 600
    assert len(result.usage.raw["batches"]) == 3


async def test_embeddings_input_type(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    query = DeploymentConfig(provider="cohere", model="embed-mock", input_type="search_query")

    await provider.embed(EmbeddingRequest(model="embed", input="hello"), DEPLOYMENT)
    default_type = cohere_upstream.last.json["input_type"]
    await provider.embed(EmbeddingRequest(model="embed", input="hello", dimensions=4), query)
    configured = cohere_upstream.last.json

    assert default_type == "search_document"
    assert configured["input_type"] == "search_query"
    assert configured["embedding_types"] == ["float"]
    assert configured["output_dimension"] == 4


async def test_embeddings_reject_token_ids(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.embed(EmbeddingRequest(model="embed", input=[[1, 2, 3]]), DEPLOYMENT)

    assert caught.value.param == "input"
    assert cohere_upstream.calls == 0


async def test_early_stop_closes_the_stream(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    cohere_upstream.enqueue(Reply(text="one two three four five six seven", chunk_size=2, event_delay=0.05))

    stream = cast(AsyncGenerator[StreamEvent, None], provider.stream_chat(chat_request(), DEPLOYMENT))
    first = await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if cohere_upstream.in_flight == 0:
            break
        await asyncio.sleep(0.02)

    assert first.content == "on"
    assert cohere_upstream.in_flight == 0


async def test_client_is_pooled_across_requests(provider: CohereProvider, cohere_upstream: CohereMock) -> None:
    await provider.chat(chat_request(), DEPLOYMENT)
    await collect(provider, chat_request())
    await provider.embed(EmbeddingRequest(model="embed", input="hello"), DEPLOYMENT)

    assert len({request.peer_port for request in cohere_upstream.requests}) == 1
