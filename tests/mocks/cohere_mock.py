"""A mock of Cohere's v2 API: POST /v2/chat (JSON and SSE) and POST /v2/embed.

Stream events carry both an `event:` line and a "type" in the data (the SDK reads the data's
type). A failing stream ends with message-end whose finish_reason is ERROR. Error bodies are
`{"message": "..."}`. Embed requests need an input_type and at most 96 texts.

Run it alone with `python -m tests.mocks.cohere_mock --port 8003 --api-key ...`.
"""

from __future__ import annotations

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
from tests.mocks.openai_mock import embedding_vector

MAX_EMBED_TEXTS = 96
DEFAULT_DIMENSIONS = 8
TOOL_PLAN = "I will call the tools."
_ROLES = {"user", "assistant", "system", "tool"}
_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
# Template tokens Cohere counts in `tokens` but does not bill; the mock adds a fixed number.
_TEMPLATE_TOKENS = 200


def cohere_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Scripted:
    """Build an error response with Cohere's body shape."""
    return Scripted(status=status, headers=headers or {}, body={"message": message})


def event(data: dict[str, Any]) -> SSE:
    """Frame an event with both an `event:` line and the data's "type"."""
    return SSE(data, event=data["type"])


def stream_error_end(message: str = "internal server error") -> SSE:
    """The message-end Cohere sends when generation fails midway."""
    return event({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": message}})


class CohereMock(MockUpstream):
    name = "cohere"
    default_key = "co-mock-0123456789"

    def __init__(self, api_key: str | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host=host, port=port)
        self._ids = count(1)

    def routes(self) -> dict[tuple[str, str], Any]:
        return {("POST", "/v2/chat"): _validate_chat, ("POST", "/v2/embed"): _validate_embed}

    def check_auth(self, request: RecordedRequest) -> None:
        if bearer_token(request) != self.api_key:
            raise RequestRejected(401, "invalid api token", "unauthorized")

    def error_body(self, status: int, message: str, error_type: str) -> Any:
        return {"message": message}

    def render_default(self, request: RecordedRequest) -> Scripted | None:
        if request.path == "/v2/embed":
            return self.embed(request)
        return None

    def embed(self, request: RecordedRequest) -> Scripted:
        texts = request.json["texts"]
        dimensions = int(request.json.get("output_dimension") or DEFAULT_DIMENSIONS)
        billed = sum(max(1, word_count(text)) for text in texts)
        body = {
            "id": f"embed-mock-{next(self._ids)}",
            "embeddings": {"float": [embedding_vector(text, dimensions) for text in texts]},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": billed}},
            "response_type": "embeddings_by_type",
        }
        return Scripted(body=body)

    def render(self, request: RecordedRequest, reply: Reply) -> Scripted:
        response_id = f"chat-mock-{next(self._ids)}"
        usage = reply.usage or _default_usage(request, reply)
        finish = reply.finish or ("TOOL_CALL" if reply.tool_calls else "COMPLETE")
        if not request.stream:
            return Scripted(headers=reply.headers, body=_chat_body(response_id, reply, finish, usage), delay=reply.delay)
        events = stream_events(response_id, reply, finish, usage)
        for item in events:
            item.delay = reply.event_delay
        return Scripted(headers=reply.headers, events=events, cut_after=reply.cut_after, delay=reply.delay)


def _default_usage(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    prompt = 5 + word_count(request.json.get("messages"))
    completion = max(1, word_count(reply.text)) + 10 * len(reply.tool_calls)
    return {
        "billed_units": {"input_tokens": prompt, "output_tokens": completion},
        "tokens": {"input_tokens": prompt + _TEMPLATE_TOKENS, "output_tokens": completion + 2},
        "cached_tokens": 0,
    }


def _tool_call(call: Any, arguments: str) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _chat_body(response_id: str, reply: Reply, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if reply.text:
        message["content"] = [{"type": "text", "text": reply.text}]
    if reply.tool_calls:
        message["tool_plan"] = TOOL_PLAN
        message["tool_calls"] = [_tool_call(call, call.arguments) for call in reply.tool_calls]
    return {"id": response_id, "finish_reason": finish, "message": message, "usage": usage}


def stream_events(response_id: str, reply: Reply, finish: str, usage: dict[str, Any]) -> list[SSE]:
    """Render `reply` as Cohere's v2 event sequence, from message-start to message-end."""
    start_message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    events = [event({"type": "message-start", "id": response_id, "delta": {"message": start_message}})]
    if reply.tool_calls:
        events.append(event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": TOOL_PLAN}}}))
    if reply.text:
        opening = {"message": {"content": {"type": "text", "text": ""}}}
        events.append(event({"type": "content-start", "index": 0, "delta": opening}))
        for piece in fragments(reply.text, reply.chunk_size):
            delta = {"message": {"content": {"text": piece}}}
            events.append(event({"type": "content-delta", "index": 0, "delta": delta}))
        events.append(event({"type": "content-end", "index": 0}))
    for index, call in enumerate(reply.tool_calls):
        opening = {"message": {"tool_calls": _tool_call(call, "")}}
        events.append(event({"type": "tool-call-start", "index": index, "delta": opening}))
        for piece in fragments(call.arguments, reply.chunk_size):
            fragment = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
            events.append(event({"type": "tool-call-delta", "index": index, "delta": fragment}))
        events.append(event({"type": "tool-call-end", "index": index}))
    events.append(event({"type": "message-end", "id": response_id, "delta": {"finish_reason": finish, "usage": usage}}))
    return events


# -- request validation -------------------------------------------------------------------------


def _validate_chat(request: RecordedRequest) -> None:
    body = request.json
    if not isinstance(body.get("model"), str):
        raise RequestRejected(400, "invalid request: model must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "invalid request: messages must not be empty")
    _validate_messages(messages)
    if body.get("tool_choice") not in (None, "REQUIRED", "NONE"):
        raise RequestRejected(400, "invalid request: tool_choice must be one of REQUIRED, NONE")
    if len(body.get("stop_sequences") or []) > 5:
        raise RequestRejected(400, "invalid request: stop_sequences can have at most 5 items")
    if (body.get("response_format") or {}).get("type", "text") not in ("text", "json_object"):
        raise RequestRejected(400, "invalid request: response_format.type must be text or json_object")


def _validate_messages(messages: list[Any]) -> None:
    known_calls: set[str] = set()
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise RequestRejected(400, f"invalid request: messages[{position}].role {role!r} is not valid")
        if role == "assistant":
            if not message.get("content") and not message.get("tool_calls"):
                raise RequestRejected(400, f"invalid request: messages[{position}] needs content or tool_calls")
            known_calls |= {call["id"] for call in message.get("tool_calls") or []}
        elif role == "tool" and message.get("tool_call_id") not in known_calls:
            raise RequestRejected(
                400, f"invalid request: messages[{position}].tool_call_id does not match any previous tool call"
            )
        elif role in ("user", "system") and message.get("content") is None:
            raise RequestRejected(400, f"invalid request: messages[{position}].content is required")


def _validate_embed(request: RecordedRequest) -> None:
    body = request.json
    if not isinstance(body.get("model"), str):
        raise RequestRejected(400, "invalid request: model must be a string")
    if body.get("input_type") not in _INPUT_TYPES:
        raise RequestRejected(400, "invalid request: input_type is required for embed models v3 and higher")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts:
        raise RequestRejected(400, "invalid request: texts must not be empty")
    if len(texts) > MAX_EMBED_TEXTS:
        raise RequestRejected(
            400, f"invalid request: total number of texts must be at most {MAX_EMBED_TEXTS} - received {len(texts)}"
        )


if __name__ == "__main__":
    run_standalone(lambda key, port: CohereMock(key, port=port))
