"""A mock of Anthropic's Messages API at POST /v1/messages.

Streams send `event: <type>` plus a `data:` object with the same "type", and no [DONE]; the
server closes after message_stop. Error bodies are
`{"type": "error", "error": {"type", "message"}, "request_id"}`. It validates requests like
the real API at version 2026-10-21, which the SDK 2.x sends. So it rejects a request without
max_tokens, two turns of one role in a row, a tool_result that matches no tool_use of the
previous turn, empty text blocks, and the removed sampling parameters.

Run it alone with `python -m tests.mocks.anthropic_mock --port 8002 --api-key ...`.
"""

from __future__ import annotations

import json
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

NEW_API_VERSION = "2026-10-21"
_REMOVED_IN_NEW_VERSION = ("temperature", "top_p", "top_k")
_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_TOOL_CHOICES = {"auto", "any", "none", "tool"}


def anthropic_error(status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None) -> Scripted:
    """Build an error response with Anthropic's body shape."""
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_mock"}
    return Scripted(status=status, headers={"request-id": "req_mock", **(headers or {})}, body=body)


def stream_error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> SSE:
    """The `event: error` Anthropic sends when a stream fails midway."""
    return SSE({"type": "error", "error": {"type": error_type, "message": message}}, event="error")


def event(data: dict[str, Any]) -> SSE:
    """Frame an event the way Anthropic does: the `event:` name equals the data's type."""
    return SSE(data, event=data["type"])


class AnthropicMock(MockUpstream):
    name = "anthropic"
    default_key = "sk-ant-mock-0123456789"

    def __init__(self, api_key: str | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host=host, port=port)
        self._ids = count(1)

    def routes(self) -> dict[tuple[str, str], Any]:
        return {("POST", "/v1/messages"): _validate_messages_request}

    def check_auth(self, request: RecordedRequest) -> None:
        # The SDK 2.x sends the key as a bearer token; older clients send x-api-key.
        key = request.headers.get("x-api-key") or bearer_token(request)
        if key != self.api_key:
            raise RequestRejected(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            raise RequestRejected(400, "anthropic-version: header is required", "invalid_request_error")

    def error_body(self, status: int, message: str, error_type: str) -> Any:
        return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_mock"}

    def render(self, request: RecordedRequest, reply: Reply) -> Scripted:
        message_id = f"msg_mock_{next(self._ids)}"
        usage = reply.usage or _default_usage(request, reply)
        finish = reply.finish or ("tool_use" if reply.tool_calls else "end_turn")
        stop_sequence = _stop_sequence(request, finish)
        if not request.stream:
            body = _message_body(message_id, request.json["model"], reply, finish, stop_sequence, usage)
            return Scripted(headers=reply.headers, body=body, delay=reply.delay)
        events = stream_events(message_id, request.json["model"], reply, finish, stop_sequence, usage)
        for item in events:
            item.delay = reply.event_delay
        return Scripted(headers=reply.headers, events=events, cut_after=reply.cut_after, delay=reply.delay)


def _default_usage(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    prompt = 5 + word_count(request.json.get("messages")) + word_count(request.json.get("system"))
    return {
        "input_tokens": prompt,
        "output_tokens": max(1, word_count(reply.text)) + 10 * len(reply.tool_calls),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _stop_sequence(request: RecordedRequest, finish: str) -> str | None:
    sequences = request.json.get("stop_sequences") or []
    return sequences[0] if finish == "stop_sequence" and sequences else None


def _content(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments)})
    return blocks


def _message_body(
    message_id: str, model: str, reply: Reply, finish: str, stop_sequence: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(reply),
        "stop_reason": finish,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def stream_events(
    message_id: str, model: str, reply: Reply, finish: str, stop_sequence: str | None, usage: dict[str, Any]
) -> list[SSE]:
    """Render `reply` as Anthropic's event sequence, from message_start to message_stop."""
    # message_start reports one output token; message_delta later reports the running total.
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [event({"type": "message_start", "message": start}), event({"type": "ping"})]

    index = 0
    if reply.text:
        events.append(event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}))
        for piece in fragments(reply.text, reply.chunk_size):
            delta = {"type": "text_delta", "text": piece}
            events.append(event({"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(event({"type": "content_block_stop", "index": index}))
        index += 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        events.append(event({"type": "content_block_start", "index": index, "content_block": block}))
        for piece in fragments(call.arguments, reply.chunk_size):
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(event({"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(event({"type": "content_block_stop", "index": index}))
        index += 1

    final_usage = {"output_tokens": usage.get("output_tokens", 1)}
    final_delta: dict[str, Any] = {"stop_reason": finish, "stop_sequence": stop_sequence}
    events.append(event({"type": "message_delta", "delta": final_delta, "usage": final_usage}))
    events.append(event({"type": "message_stop"}))
    return events


# -- request validation -------------------------------------------------------------------------


def _validate_messages_request(request: RecordedRequest) -> None:
    body = request.json
    if not isinstance(body.get("model"), str):
        raise RequestRejected(400, "model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise RequestRejected(400, "max_tokens: Field required")
    if request.headers.get("anthropic-version") == NEW_API_VERSION:
        for name in _REMOVED_IN_NEW_VERSION:
            if name in body:
                raise RequestRejected(400, f"{name}: Extra inputs are not permitted")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "messages: at least one message is required")
    _validate_system(body.get("system"))
    _validate_turns(messages)
    _validate_tools(body.get("tools"), body.get("tool_choice"))


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list) or any(block.get("type") != "text" for block in system):
        raise RequestRejected(400, "system: Input should be a valid string or a list of text blocks")


def _validate_turns(messages: list[Any]) -> None:
    previous_role: str | None = None
    open_tool_uses: set[str] = set()
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise RequestRejected(400, f"messages.{position}.role: Input should be 'user' or 'assistant'")
        if role == previous_role:
            raise RequestRejected(
                400,
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row',
            )
        blocks = _blocks(message, position, is_last=position == len(messages) - 1)
        _validate_tool_results(blocks, position, open_tool_uses, role)
        open_tool_uses = {block["id"] for block in blocks if block["type"] == "tool_use"}
        previous_role = role


def _blocks(message: dict[str, Any], position: int, *, is_last: bool) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or (not content and not (is_last and message["role"] == "assistant")):
        raise RequestRejected(
            400, f"messages.{position}: all messages must have non-empty content except for the optional final assistant message"
        )
    for block_index, block in enumerate(content):
        where = f"messages.{position}.content.{block_index}"
        kind = block.get("type")
        if kind == "text" and not str(block.get("text", "")).strip():
            raise RequestRejected(400, f"{where}: text content blocks must contain non-whitespace text")
        if kind == "image":
            _validate_image(block.get("source") or {}, where)
        if kind == "tool_use" and message["role"] != "assistant":
            raise RequestRejected(400, f"{where}: tool_use blocks may only appear in assistant messages")
        if kind == "tool_result" and message["role"] != "user":
            raise RequestRejected(400, f"{where}: tool_result blocks may only appear in user messages")
        if kind not in ("text", "image", "tool_use", "tool_result", "document"):
            raise RequestRejected(400, f"{where}.type: unknown content block type {kind!r}")
    return content


def _validate_image(source: dict[str, Any], where: str) -> None:
    if source.get("type") == "base64" and source.get("media_type") in _MEDIA_TYPES and source.get("data"):
        return
    if source.get("type") == "url" and str(source.get("url", "")).startswith("https://"):
        return
    raise RequestRejected(400, f"{where}.source: invalid image source")


def _validate_tool_results(blocks: list[dict[str, Any]], position: int, open_ids: set[str], role: str) -> None:
    results = [block for block in blocks if block["type"] == "tool_result"]
    unexpected = sorted({str(block.get("tool_use_id")) for block in results} - open_ids)
    if unexpected:
        raise RequestRejected(
            400,
            f"messages.{position}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{', '.join(unexpected)}. Each `tool_result` block must have a corresponding "
            "`tool_use` block in the previous message.",
        )
    if open_ids and role == "user":
        missing = sorted(open_ids - {block.get("tool_use_id") for block in results})
        if missing:
            raise RequestRejected(
                400,
                f"messages.{position}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message.",
            )
        first_other = next((i for i, block in enumerate(blocks) if block["type"] != "tool_result"), len(blocks))
        if any(block["type"] == "tool_result" for block in blocks[first_other:]):
            raise RequestRejected(400, f"messages.{position}: tool_result blocks must come before any other content")


def _validate_tools(tools: Any, tool_choice: Any) -> None:
    for index, tool in enumerate(tools or []):
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise RequestRejected(400, f"tools.{index}: name and input_schema are required")
    if tool_choice is None:
        return
    if tool_choice.get("type") not in _TOOL_CHOICES:
        raise RequestRejected(400, "tool_choice.type: Input should be 'auto', 'any', 'none' or 'tool'")
    if tool_choice["type"] == "tool" and not isinstance(tool_choice.get("name"), str):
        raise RequestRejected(400, "tool_choice.name: Field required")


if __name__ == "__main__":
    run_standalone(lambda key, port: AnthropicMock(key, port=port))
