"""Hardening against bad input: size, count, depth and number caps, and property-based tests
that throw random and malformed bodies at the parser and at the real daemon."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_bridge.errors import InvalidRequest, RequestError
from sage_bridge.server.parse import InputLimits, parse_body, validate
from sage_bridge.types import ChatRequest, EmbeddingRequest
from tests.app_env import chat_body, cloud_config, serve_app
from tests.harness import Daemon

USER = {"role": "user", "content": "hi"}
LIMITS = InputLimits(max_messages=8, max_content_chars=1000, max_json_depth=16)


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def rejection(body: bytes, limits: InputLimits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(body, limits)
    return caught.value


# Each cap, in process.


def test_too_many_messages_is_rejected_by_name() -> None:
    error = rejection(encode({"model": "m", "messages": [USER] * 9}))
    assert error.status == 400
    assert error.param == "messages"
    assert "9 messages" in error.message
    assert "server.max_messages" in error.message


def test_message_count_at_the_cap_passes() -> None:
    assert parse_body(encode({"model": "m", "messages": [USER] * 8}), LIMITS)


def test_too_much_text_is_rejected() -> None:
    parts = [{"type": "text", "text": "x" * 400}, {"type": "text", "text": "y" * 400}]
    body = {"model": "m", "messages": [{"role": "system", "content": "z" * 300}, {"role": "user", "content": parts}]}
    error = rejection(encode(body))
    assert error.param == "messages"
    assert "1100 characters" in error.message
    assert "server.max_content_chars" in error.message


def test_too_much_embedding_input_is_rejected() -> None:
    error = rejection(encode({"model": "m", "input": ["a" * 600, "b" * 600]}))
    assert error.param == "input"


def test_deep_json_is_rejected() -> None:
    error = rejection(b"[" * 17 + b"]" * 17)
    assert "more than 16 levels" in error.message
    assert "server.max_json_depth" in error.message


def test_json_at_the_depth_cap_passes() -> None:
    assert parse_body(b"[" * 16 + b"]" * 16, LIMITS) is not None


def test_json_deeper_than_the_recursion_limit_is_rejected() -> None:
    assert "levels" in rejection(b'{"a":' * 100_000).message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"seed": 123456789012345678901234567890}', "64-bit range"),
        (b'{"seed": 9223372036854775808}', "64-bit range"),
        (b'{"seed": -' + b"9" * 5000 + b"}", "64-bit range"),
        (b'{"temperature": 1e400}', "64-bit float"),
        (b'{"temperature": NaN}', "NaN"),
        (b'{"temperature": -Infinity}', "-Infinity"),
        (b'{"model": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
    ],
)
def test_unsendable_values_are_rejected(body: bytes, words: str) -> None:
    assert words in rejection(body).message


def test_int64_bounds_pass() -> None:
    data = parse_body(b'{"a": 9223372036854775807, "b": -9223372036854775808}', LIMITS)
    assert data == {"a": 2**63 - 1, "b": -(2**63)}


def test_surrogate_pair_passes() -> None:
    assert parse_body(b'{"content": "\\ud83d\\ude00"}', LIMITS) == {"content": "\N{GRINNING FACE}"}


def test_long_digit_run_in_a_string_passes() -> None:
    # The run sends the body to the careful parser, which accepts it as it is.
    data = parse_body(b'{"content": "order 12345678901234567890"}', LIMITS)
    assert data == {"content": "order 12345678901234567890"}


def test_numbers_keep_their_types() -> None:
    data = parse_body(b'{"n": 1.0, "m": 12, "k": -3e2}', LIMITS)
    assert isinstance(data, dict)
    assert type(data["n"]) is float
    assert type(data["m"]) is int
    assert data["k"] == -300.0


def test_utf16_body_passes() -> None:
    assert parse_body('{"model": "m"}'.encode("utf-16"), LIMITS) == {"model": "m"}


# The caps from bridge.yaml, through the app in process.


async def test_caps_come_from_bridge_yaml(tmp_path: Path) -> None:
    caps = "  max_messages: 2\n  max_content_chars: 50\n  max_json_depth: 8\n"
    async with serve_app(tmp_path, cloud_config("http://127.0.0.1:9/v1", server=caps)) as env:
        many = await env.session.post("/v1/chat/completions", json={"model": "default", "messages": [USER] * 3})
        long = await env.session.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "user", "content": "x" * 51}]})
        deep = await env.session.post("/v1/chat/completions", data=b"[" * 9 + b"]" * 9)
        bodies = [await response.json() for response in (many, long, deep)]
    assert [many.status, long.status, deep.status] == [400, 400, 400]
    assert bodies[0]["error"]["code"] == "array_above_max_length"
    assert bodies[1]["error"]["code"] == "string_above_max_length"
    assert "more than 8 levels" in bodies[2]["error"]["message"]


# Random bodies at the parser, in process.

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"]) | st.text(max_size=8)
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "audio"]), "text": st.text(max_size=20)})
contents = st.one_of(st.text(max_size=40), st.none(), st.lists(parts, max_size=3), json_values)
messages = st.fixed_dictionaries({"role": roles, "content": contents}, optional={"name": st.text(max_size=8),
                                                                                  "tool_call_id": json_values})
# Small output caps keep the real model's outputs short, and a few values are invalid on purpose.
output_caps = st.integers(min_value=-2, max_value=3) | st.sampled_from([2**63, "4", None, 1.5])
chat_fields = {
    "temperature": st.floats() | st.text(max_size=4), "top_p": st.floats(), "n": st.integers(-1, 3),
    "seed": st.integers() | json_values, "stop": st.text(max_size=6) | st.lists(st.text(max_size=6), max_size=5),
    "stream": st.booleans() | json_values, "stream_options": json_values, "tools": json_values,
    "tool_choice": json_values, "response_format": json_values, "user": json_values, "logit_bias": json_values,
    "max_completion_tokens": output_caps,
}
near_valid_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["default", "smollm2", "nope"]) | json_values,
     "messages": st.lists(messages, max_size=4) | json_values,
     "max_tokens": output_caps},
    optional=chat_fields,
)
valid_chat = st.fixed_dictionaries(
    {"model": st.just("default"),
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                                 "content": st.text(max_size=30)}), min_size=1, max_size=3),
     "max_tokens": st.integers(min_value=1, max_value=3)},
    optional={"temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "stream": st.booleans(),
              "stop": st.lists(st.text(max_size=4), max_size=3), "seed": st.integers(0, 2**40)},
)
near_valid_embeddings = st.fixed_dictionaries(
    {"model": st.sampled_from(["default", "smollm2"]) | json_values},
    optional={"input": st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3) | json_values,
              "encoding_format": st.sampled_from(["float", "base64", "hex"]), "dimensions": st.integers()},
)


def mangle(data: bytes, cut: int, junk: bytes) -> bytes:
    """Cut a JSON document short or splice junk into it."""
    cut = cut % (len(data) + 1)
    return data[:cut] + junk + data[cut + len(junk):]


documents = st.one_of(valid_chat, near_valid_chat, near_valid_embeddings, json_values).map(lambda value: json.dumps(value).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    documents,
    st.builds(mangle, documents, st.integers(min_value=0), st.binary(min_size=1, max_size=6)),
)


def assert_openai_error(body: dict[str, Any]) -> None:
    assert isinstance(body["error"], dict)
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]


@settings(max_examples=500, deadline=None)
@given(body=bodies)
def test_parser_raises_only_request_errors(body: bytes) -> None:
    try:
        data = parse_body(body, LIMITS)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        assert_openai_error(exc.body())
        return
    for model in (ChatRequest, EmbeddingRequest):
        try:
            validate(model, data)
        except InvalidRequest as exc:
            assert exc.status == 400
            assert_openai_error(exc.body())


# Random bodies at the real daemon.

PATHS = ["/v1/chat/completions", "/v1/embeddings"]
# Header values the HTTP client accepts: visible ASCII, no surrounding whitespace.
request_ids = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, max_size=140)


def test_daemon_answers_random_bodies_without_5xx(local_daemon: Daemon) -> None:
    statuses: list[int] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies, path=st.sampled_from(PATHS), request_id=request_ids)
    def one_request(body: bytes, path: str, request_id: str) -> None:
        headers = {"content-type": "application/json", "x-request-id": request_id}
        with local_daemon.http() as http:
            response = http.post(path, content=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        assert response.headers["x-request-id"]
        if response.status_code >= 400:
            assert_openai_error(response.json())

    one_request()

    with local_daemon.http() as http:
        health = http.get("/healthz")
        answer = http.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert health.json()["status"] == "ok"
    assert answer.status_code == 200
    assert any(status == 200 for status in statuses)  # some random bodies were valid requests
    assert any(400 <= status < 500 for status in statuses)
