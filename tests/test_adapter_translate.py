"""Pure translation functions of the Anthropic and Cohere adapters and their shared helpers,
checked on plain dicts without a server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind, InvalidRequest, UpstreamError
from sage_bridge.providers import translate_anthropic, translate_cohere
from sage_bridge.providers.adapter_common import (
    PLACEHOLDER_KEY,
    ParamPolicy,
    configured_key,
    estimated_usage,
    parse_data_url,
)
from sage_bridge.secrets import MASK, redact
from sage_bridge.types import ChatRequest, EmbeddingRequest, StreamEvent

REJECTING = DeploymentConfig(provider="p", model="m")
DROPPING = DeploymentConfig(provider="p", model="m", unsupported_params="drop")


def chat(messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": "r", "messages": messages, **fields})


def call(call_id: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": arguments}}


def anthropic_messages(request: ChatRequest, deployment: DeploymentConfig = REJECTING) -> dict[str, Any]:
    return translate_anthropic.build_request(request, deployment, "anthropic")


# -- Anthropic requests -------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, ""], ids=["null", "empty_string"])
def test_assistant_without_text_gets_only_tool_use(empty: str | None) -> None:
    request = chat(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": empty, "tool_calls": [call("toolu_1")]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
        ]
    )

    messages = anthropic_messages(request)["messages"]

    assert messages[1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]


def test_assistant_text_comes_before_tool_use() -> None:
    request = chat(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [call("toolu_1", '{"q": 1}')]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
        ]
    )

    blocks = anthropic_messages(request)["messages"][1]["content"]

    assert [block["type"] for block in blocks] == ["text", "tool_use"]
    assert blocks[1]["input"] == {"q": 1}


def test_adjacent_assistant_turns_merge() -> None:
    request = chat(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "one"}, {"role": "assistant", "content": "two"}]
    )

    messages = anthropic_messages(request)["messages"]

    assert [message["role"] for message in messages] == ["user", "assistant"]
    assert [block["text"] for block in messages[1]["content"]] == ["one", "two"]


def test_empty_tool_result_has_no_content() -> None:
    request = chat(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [call("toolu_1")]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        ]
    )

    result = anthropic_messages(request)["messages"][2]["content"][0]

    assert result == {"type": "tool_result", "tool_use_id": "toolu_1"}


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "assistant", "tool_calls": [call("toolu_1", "{not json")]}], "toolu_1"),
        ([{"role": "assistant", "tool_calls": [call("toolu_1", "[1, 2]")]}], "not a JSON object"),
        ([{"role": "tool", "content": "r"}], "tool_call_id"),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}],
            "image",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}], "image/bmp"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}]}], "https"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]}], "base64"),
    ],
    ids=["bad_json", "not_object", "no_tool_call_id", "system_image", "media_type", "plain_http", "not_base64"],
)
def test_untranslatable_messages_are_rejected(messages: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        anthropic_messages(chat([{"role": "user", "content": "q"}, *messages]))

    assert fragment in caught.value.message


def test_image_detail_follows_policy() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}}
    request = chat([{"role": "user", "content": [image]}])

    with pytest.raises(InvalidRequest):
        anthropic_messages(request)
    dropped = anthropic_messages(request, DROPPING)["messages"][0]["content"][0]

    assert dropped == {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
        ({"parallel_tool_calls": True}, None),
        ({}, None),
    ],
)
def test_anthropic_tool_choice(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "strict": True}}]

    sent = anthropic_messages(chat([{"role": "user", "content": "q"}], tools=tools, **fields))

    assert sent.get("tool_choice") == expected
    assert sent["tools"] == [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}, "strict": True}]


def test_tool_choice_without_tools_is_left_out() -> None:
    sent = anthropic_messages(chat([{"role": "user", "content": "q"}], tool_choice="none"))

    assert "tool_choice" not in sent


def test_malformed_named_tool_choice_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        anthropic_messages(chat([{"role": "user", "content": "q"}], tool_choice={"type": "function"}))

    assert caught.value.param == "tool_choice"


def test_user_becomes_metadata_and_stop_becomes_sequences() -> None:
    sent = anthropic_messages(chat([{"role": "user", "content": "q"}], user="u-42", stop="END"))

    assert sent["metadata"] == {"user_id": "u-42"}
    assert sent["stop_sequences"] == ["END"]


def test_message_name_follows_policy() -> None:
    request = chat([{"role": "user", "content": "q", "name": "alice"}])

    with pytest.raises(InvalidRequest) as caught:
        anthropic_messages(request)
    dropped = anthropic_messages(request, DROPPING)

    assert caught.value.param == "messages[].name"
    assert dropped["messages"][0]["content"] == [{"type": "text", "text": "q"}]


# -- Anthropic responses and streams -------------------------------------------------------------


def test_parse_message_joins_text_and_ignores_thinking() -> None:
    message = {
        "id": "msg_1",
        "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello "},
            {"type": "text", "text": "there"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }

    result = translate_anthropic.parse_message("anthropic", message)

    assert result.content == "Hello there"
    assert result.tool_calls[0].function.arguments == '{"q": "x"}'
    assert result.finish_reason == "tool_calls"
    assert result.usage.prompt_tokens == 3


def feed_all(
    translator: translate_anthropic.StreamTranslator | translate_cohere.StreamTranslator,
    events: list[dict[str, Any]],
) -> list[StreamEvent]:
    produced: list[StreamEvent] = []
    for item in events:
        produced.extend(translator.feed(item))
    return produced + translator.finish()


def anthropic_start(usage: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": "m", "content": [], "usage": usage}}


def test_anthropic_stream_usage_is_cumulative() -> None:
    translator = translate_anthropic.StreamTranslator("anthropic", chat([{"role": "user", "content": "q"}]))
    events: list[dict[str, Any]] = [
        anthropic_start({"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4}),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 8}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 15, "input_tokens": 12}},
        {"type": "message_stop"},
    ]

    produced = feed_all(translator, events)
    usage = produced[-1].usage

    assert usage is not None
    assert usage.completion_tokens == 15
    assert usage.prompt_tokens == 16
    assert usage.cached_tokens == 4
    assert produced[-2].finish_reason == "stop"


def test_anthropic_tool_index_skips_other_blocks() -> None:
    translator = translate_anthropic.StreamTranslator("anthropic", chat([{"role": "user", "content": "q"}]))
    events: list[dict[str, Any]] = [
        anthropic_start({"input_tokens": 1, "output_tokens": 1}),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_A", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
    ]

    produced = feed_all(translator, events)
    deltas = [item.tool_call for item in produced if item.tool_call is not None]

    assert [delta.index for delta in deltas] == [0, 0, 0]
    assert [delta.id for delta in deltas] == ["toolu_A", None, None]
    assert "".join(delta.arguments for delta in deltas) == '{"a": 1}'
    assert not any(item.content for item in produced)


def test_anthropic_stream_without_message_delta_fails() -> None:
    translator = translate_anthropic.StreamTranslator("anthropic", chat([{"role": "user", "content": "q"}]))
    translator.feed(anthropic_start({"input_tokens": 1, "output_tokens": 1}))

    with pytest.raises(UpstreamError) as caught:
        translator.finish()

    assert caught.value.kind is ErrorKind.CONNECTION


def test_anthropic_stream_without_usage_is_estimated() -> None:
    translator = translate_anthropic.StreamTranslator("anthropic", chat([{"role": "user", "content": "count me"}]))
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "12345678"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
    ]

    usage = feed_all(translator, events)[-1].usage

    assert usage is not None
    assert usage.estimated is True
    assert usage.completion_tokens == 2


# -- Cohere ---------------------------------------------------------------------------------------


def cohere_request(request: ChatRequest, deployment: DeploymentConfig = REJECTING) -> dict[str, Any]:
    return translate_cohere.build_request(request, deployment, "cohere")


def test_cohere_user_images_pass_as_image_url() -> None:
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]

    sent = cohere_request(chat([{"role": "user", "content": content}]))

    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]


def test_cohere_mixed_strict_tools_follow_policy() -> None:
    tools = [
        {"type": "function", "function": {"name": "a", "strict": True}},
        {"type": "function", "function": {"name": "b"}},
    ]
    request = chat([{"role": "user", "content": "q"}], tools=tools)

    with pytest.raises(InvalidRequest):
        cohere_request(request)
    dropped = cohere_request(request, DROPPING)
    all_strict = cohere_request(chat([{"role": "user", "content": "q"}], tools=[tools[0]]))

    assert "strict_tools" not in dropped
    assert all_strict["strict_tools"] is True


def test_cohere_cached_tokens_never_exceed_prompt() -> None:
    raw = {"billed_units": {"input_tokens": 12.0, "output_tokens": 7.0}, "tokens": {"input_tokens": 507.0}, "cached_tokens": 448.0}

    usage = translate_cohere.usage_from_cohere(raw)

    assert usage.prompt_tokens == 12
    assert usage.cached_tokens == 12
    assert usage.raw["cached_tokens"] == 448
    assert isinstance(usage.raw["billed_units"]["input_tokens"], int)


def test_cohere_stream_accepts_list_shaped_tool_calls() -> None:
    translator = translate_cohere.StreamTranslator("cohere", chat([{"role": "user", "content": "q"}]))
    start = {"message": {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}
    events: list[dict[str, Any]] = [
        {"type": "tool-call-start", "index": 3, "delta": start},
        {"type": "tool-call-end", "index": 3},
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {"billed_units": {"input_tokens": 1, "output_tokens": 2}}}},
    ]

    produced = feed_all(translator, events)
    deltas = [item.tool_call for item in produced if item.tool_call is not None]

    assert [(delta.index, delta.id, delta.arguments) for delta in deltas] == [(0, "c1", ""), (0, None, "{}")]
    assert produced[-2].finish_reason == "tool_calls"


def test_cohere_stream_without_message_end_fails() -> None:
    translator = translate_cohere.StreamTranslator("cohere", chat([{"role": "user", "content": "q"}]))
    translator.feed({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}})

    with pytest.raises(UpstreamError) as caught:
        translator.finish()

    assert caught.value.kind is ErrorKind.CONNECTION


def test_cohere_response_without_content() -> None:
    response = {"id": "r", "finish_reason": "TOOL_CALL", "message": {"role": "assistant", "tool_calls": [call("c1", '{"a":1}')]}}

    result = translate_cohere.parse_response("cohere", response, "command")

    assert result.content is None
    assert result.tool_calls[0].function.arguments == '{"a":1}'
    assert result.upstream_model == "command"


@pytest.mark.parametrize(("count", "sizes"), [(1, [1]), (96, [96]), (97, [96, 1]), (250, [96, 96, 58])])
def test_embed_batches(count: int, sizes: list[int]) -> None:
    batches = translate_cohere.embed_batches([str(i) for i in range(count)])

    assert [len(batch) for batch in batches] == sizes
    assert [text for batch in batches for text in batch] == [str(i) for i in range(count)]


def test_embed_rejects_empty_input() -> None:
    with pytest.raises(InvalidRequest):
        translate_cohere.embed_texts(EmbeddingRequest(model="e", input=[]))


# -- shared helpers ---------------------------------------------------------------------------


def test_parse_data_url() -> None:
    assert parse_data_url("data:image/png;base64,QUJD") == ("image/png", "QUJD")
    assert parse_data_url("https://x.test/a.png") is None


def test_policy_reject_names_parameter_and_fix() -> None:
    with pytest.raises(InvalidRequest) as caught:
        ParamPolicy("anthropic", REJECTING).unsupported("top_k", "no such thing")

    assert caught.value.param == "top_k"
    assert '"anthropic"' in caught.value.message
    assert "unsupported_params: drop" in caught.value.message


def test_policy_drop_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        ParamPolicy("anthropic", DROPPING).unsupported("top_k", "no such thing")

    assert [record.levelno for record in caplog.records] == [logging.DEBUG]
    assert "top_k" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (SecretStr(""), None), (SecretStr("none"), PLACEHOLDER_KEY), (SecretStr("None"), PLACEHOLDER_KEY)],
)
def test_configured_key(value: SecretStr | None, expected: str | None) -> None:
    assert configured_key(value) == expected


def test_configured_key_is_registered_for_redaction() -> None:
    key = "sk-registered-by-adapter-91a7"

    configured_key(SecretStr(key))

    assert redact(f"echo {key}") == f"echo {MASK}"


def test_estimated_usage_counts_request_and_output() -> None:
    request = chat([{"role": "user", "content": "x" * 40}])

    usage = estimated_usage(request, ["abcd", "efgh"])

    assert usage.estimated is True
    assert usage.prompt_tokens == 14
    assert usage.completion_tokens == 2
