"""A mock of the OpenAI API: chat completions (JSON and SSE) and embeddings under /v1.

Streams are `data:` lines only and end with `data: [DONE]`; a usage chunk with empty
`choices` comes before it when the request set stream_options.include_usage. Error bodies are
`{"error": {"message", "type", "param", "code"}}`.

Run it alone with `python -m tests.mocks.openai_mock --port 8001 --api-key sk-...`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from itertools import count
from typing import Any

from tests.mocks.base import (
    SSE,
    MockUpstream,
    RecordedRequest,
    Reply,
    RequestRejected,
    Scripted,
    bearer_token,
    fragments,
    run_standalone,
    word_count,
)

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_CREATED = 1767225600
DEFAULT_DIMENSIONS = 8


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Scripted:
    """Build an error response with OpenAI's body shape."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return Scripted(status=status, headers=headers or {}, body=body)


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """Return a deterministic vector for `text`, so tests can compare results."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(dimensions)]


class OpenAIMock(MockUpstream):
    name = "openai"
    default_key = "sk-mock-openai-0123456789"
    base_path = "/v1"

    def __init__(self, api_key: str | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host=host, port=port)
        self._ids = count(1)

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "/v1/chat/completions"): _validate_chat,
            ("POST", "/v1/embeddings"): _validate_embeddings,
        }

    def check_auth(self, request: RecordedRequest) -> None:
        if bearer_token(request) != self.api_key:
            raise RequestRejected(401, "Incorrect API key provided.", "invalid_request_error")

    def error_body(self, status: int, message: str, error_type: str) -> Any:
        code = "invalid_api_key" if status == 401 else None
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def render_default(self, request: RecordedRequest) -> Scripted | None:
        if request.path.endswith("/embeddings"):
            return self.embeddings(request)
        return None

    def embeddings(self, request: RecordedRequest) -> Scripted:
        body = request.json
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
        data = []
        for index, item in enumerate(inputs):
            vector = embedding_vector(str(item), dimensions)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(max(1, word_count(item)) for item in inputs)
        return Scripted(
            body={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def render(self, request: RecordedRequest, reply: Reply) -> Scripted:
        completion_id = f"chatcmpl-mock-{next(self._ids)}"
        usage = reply.usage or _default_usage(request, reply)
        finish = reply.finish or ("tool_calls" if reply.tool_calls else "stop")
        if not request.stream:
            body = _completion_body(completion_id, request.json["model"], reply, finish, usage)
            return Scripted(headers=reply.headers, body=body, delay=reply.delay)
        events = stream_events(completion_id, request.json, reply, finish, usage)
        for event in events:
            event.delay = reply.event_delay
        return Scripted(headers=reply.headers, events=events, cut_after=reply.cut_after, delay=reply.delay)


def _default_usage(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    prompt = 5 + word_count(request.json.get("messages"))
    completion = max(1, word_count(reply.text)) + 10 * len(reply.tool_calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _completion_body(
    completion_id: str, model: str, reply: Reply, finish: str, usage: dict[str, Any]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in reply.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


def stream_events(
    completion_id: str, body: dict[str, Any], reply: Reply, finish: str, usage: dict[str, Any]
) -> list[SSE]:
    """Render `reply` as the chunk sequence OpenAI streams, ending with [DONE]."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> SSE:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return SSE(_chunk_body(completion_id, body["model"], [choice]))

    # A text answer opens with a role chunk; a tool-call answer carries the role (and null
    # content) in its first tool-call delta instead, as OpenAI does.
    events = []
    if reply.text or not reply.tool_calls:
        events.append(chunk({"role": "assistant", "content": ""}))
        events += [chunk({"content": piece}) for piece in fragments(reply.text, reply.chunk_size)]
    for index, call in enumerate(reply.tool_calls):
        first: dict[str, Any] = {"tool_calls": [
            {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        ]}
        if not events:
            first = {"role": "assistant", "content": None, **first}
        events.append(chunk(first))
        for piece in fragments(call.arguments, reply.chunk_size):
            events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    events.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage_chunk = _chunk_body(completion_id, body["model"], [])
        usage_chunk["usage"] = usage
        events.append(SSE(usage_chunk))
    events.append(SSE("[DONE]"))
    return events


def _chunk_body(completion_id: str, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }


def stream_error_event(message: str, error_type: str = "server_error", code: str | None = None) -> SSE:
    """A data chunk carrying an error object, which is how OpenAI fails a stream midway."""
    return SSE({"error": {"message": message, "type": error_type, "param": None, "code": code}})


def _validate_chat(request: RecordedRequest) -> None:
    body = request.json
    if not isinstance(body.get("model"), str):
        raise RequestRejected(400, "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "'messages' must contain at least one message")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise RequestRejected(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    _validate_tool_turns(messages)


def _validate_tool_turns(messages: list[Any]) -> None:
    pending: set[str] = set()
    for position, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise RequestRejected(400, f"messages[{position}].role is invalid: {role!r}")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                raise RequestRejected(
                    400,
                    "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                )
            pending.discard(call_id)
            continue
        if pending:
            raise RequestRejected(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(sorted(pending))}",
            )
        if role == "assistant":
            pending = {call["id"] for call in message.get("tool_calls") or []}


def _validate_embeddings(request: RecordedRequest) -> None:
    body = request.json
    if not isinstance(body.get("model"), str):
        raise RequestRejected(400, "you must provide a model parameter")
    if body.get("input") in (None, "", []):
        raise RequestRejected(400, "'input' must not be empty")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise RequestRejected(400, "'encoding_format' must be 'float' or 'base64'")


if __name__ == "__main__":
    run_standalone(lambda key, port: OpenAIMock(key, port=port))

