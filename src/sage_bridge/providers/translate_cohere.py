"""Translation between the unified types and Cohere's v2 Chat and Embed APIs, without I/O.

Cohere v2 messages are close to OpenAI's: system and tool messages stay in place, assistant
turns carry `tool_calls` with JSON-string arguments. The differences are the parameter names
(`p`, `stop_sequences`), an upper-case tool_choice that accepts only REQUIRED and NONE, a
json_object response format that optionally carries a schema, and the stream event names.
"""

from __future__ import annotations

import logging
from typing import Any

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind, InvalidRequest
from sage_bridge.providers.adapter_common import (
    ParamPolicy,
    estimated_usage,
    map_finish_reason,
    message_parts,
    reject_several_choices,
    upstream_model,
)
from sage_bridge.providers.errors_map import Failure
from sage_bridge.types import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    FinishReason,
    FunctionCall,
    ImagePart,
    Message,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

logger = logging.getLogger(__name__)

FINISH_REASONS: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
MAX_STOP_SEQUENCES = 5
#: texts per v2/embed call; the API rejects larger batches
EMBED_BATCH_SIZE = 96
DEFAULT_INPUT_TYPE = "search_document"


def build_request(request: ChatRequest, deployment: DeploymentConfig, provider: str) -> dict[str, Any]:
    """Return the keyword arguments for `chat` / `chat_stream` of the v2 client."""
    reject_several_choices(request, provider)
    policy = ParamPolicy(provider, deployment)
    arguments: dict[str, Any] = {
        "model": upstream_model(provider, deployment),
        "messages": translate_messages(request.messages, policy),
    }

    output_limit = request.output_limit or deployment.max_tokens
    if output_limit is not None:
        arguments["max_tokens"] = output_limit
    if request.stop_list:
        arguments["stop_sequences"] = _stop_sequences(request.stop_list)
    for source, target in (("temperature", "temperature"), ("top_p", "p"), ("seed", "seed")):
        value = getattr(request, source)
        if value is not None:
            arguments[target] = value

    if request.tools:
        arguments["tools"] = [_tool(tool) for tool in request.tools]
        _strict_tools(request.tools, arguments, policy)
    tool_choice = _tool_choice(request.tool_choice)
    if tool_choice is not None:
        arguments["tool_choice"] = tool_choice
    response_format = _response_format(request.response_format, policy)
    if response_format is not None:
        arguments["response_format"] = response_format

    _drop_or_reject_unsupported(request, policy)
    return arguments


def _drop_or_reject_unsupported(request: ChatRequest, policy: ParamPolicy) -> None:
    if request.parallel_tool_calls is False:
        policy.unsupported("parallel_tool_calls", "Cohere cannot limit a turn to one tool call")
    if request.user is not None:
        policy.unsupported("user", "Cohere chat has no end-user field")
    policy.unsupported_extras(request.extra_params)


def _stop_sequences(stops: list[str]) -> list[str]:
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"Cohere accepts at most {MAX_STOP_SEQUENCES} stop sequences; the request has {len(stops)}",
            param="stop",
        )
    return stops


# -- messages ---------------------------------------------------------------------------------


def translate_messages(messages: list[Message], policy: ParamPolicy) -> list[dict[str, Any]]:
    translated: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if message.name is not None:
            policy.unsupported("messages[].name", "Cohere messages carry no author name")
        converted = _message(message, position)
        if converted is None:
            logger.debug("leaving out messages[%d] (assistant): it has no content", position)
            continue
        translated.append(converted)
    return translated


def _message(message: Message, position: int) -> dict[str, Any] | None:
    if message.role in ("system", "developer"):
        return {"role": "system", "content": _text_only(message, position)}
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(f"messages[{position}] (tool) has no tool_call_id", param="messages")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": _text_only(message, position)}
    if message.role == "user":
        return {"role": "user", "content": _user_content(message)}
    return _assistant(message, position)


def _text_only(message: Message, position: int) -> str:
    if any(isinstance(part, ImagePart) for part in message_parts(message)):
        raise InvalidRequest(
            f"messages[{position}] ({message.role}) contains an image; Cohere takes images in user messages only",
            param="messages",
        )
    return message.text()


def _user_content(message: Message) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append({"type": "image_url", "image_url": part.image_url.model_dump(exclude_none=True)})
    return blocks


def _assistant(message: Message, position: int) -> dict[str, Any] | None:
    translated: dict[str, Any] = {"role": "assistant"}
    text = _text_only(message, position)
    if text:
        translated["content"] = text
    if message.tool_calls:
        translated["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    return translated if len(translated) > 1 else None


# -- tools and output format ------------------------------------------------------------------


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.function.name,
        "parameters": tool.function.parameters or {"type": "object", "properties": {}},
    }
    if tool.function.description:
        function["description"] = tool.function.description
    return {"type": "function", "function": function}


def _strict_tools(tools: list[Tool], arguments: dict[str, Any], policy: ParamPolicy) -> None:
    # Cohere turns strict schemas on for all tools of a request or for none.
    strict = [bool(tool.function.strict) for tool in tools]
    if all(strict):
        arguments["strict_tools"] = True
    elif any(strict):
        policy.unsupported("tools[].function.strict", "Cohere applies strict schemas to all tools or to none")


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    if choice is None or choice == "auto":
        return None  # Cohere's default lets the model decide, which is what "auto" requests
    if choice == "required":
        return "REQUIRED"
    if choice == "none":
        return "NONE"
    raise InvalidRequest(
        'Cohere can force "some tool" (tool_choice "required") or no tool ("none"), but not a named tool; '
        'send tool_choice "required" with only that tool in tools',
        param="tool_choice",
    )


def _response_format(response_format: dict[str, Any] | None, policy: ParamPolicy) -> dict[str, Any] | None:
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        return {"type": "json_object", "json_schema": schema}
    policy.unsupported("response_format", f"Cohere has no {kind} response format")
    return None


# -- responses --------------------------------------------------------------------------------


def usage_from_cohere(raw: dict[str, Any]) -> Usage:
    """Translate Cohere usage: billed units when present, raw token counts otherwise."""
    billed = raw.get("billed_units") or {}
    counted = raw.get("tokens") or {}
    has_billed = billed.get("input_tokens") is not None or billed.get("output_tokens") is not None
    source = billed if has_billed else counted
    prompt = int(source.get("input_tokens") or 0)
    cached = int(raw.get("cached_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=int(source.get("output_tokens") or 0),
        # Cache hits are counted over all prompt tokens, template included, while billed units
        # leave the template out, so the raw figure can exceed prompt_tokens. Usage promises a
        # subset; the raw figure stays in `raw`.
        cached_tokens=min(cached, prompt),
        raw=_without_none(raw),
    )


def _without_none(value: Any) -> Any:
    """Drop None fields and turn whole-number floats (the SDK parses counts as floats) into ints."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_response(provider: str, response: dict[str, Any], model: str) -> ChatResult:
    """Translate a non-streamed v2/chat response; `model` is the name sent, which it does not echo."""
    message = response.get("message") or {}
    texts = [block.get("text") or "" for block in message.get("content") or [] if block.get("type") == "text"]
    tool_calls = [
        ToolCall(
            id=call["id"],
            function=FunctionCall(name=call["function"]["name"], arguments=call["function"].get("arguments") or "{}"),
        )
        for call in message.get("tool_calls") or []
    ]
    return ChatResult(
        content="".join(texts) if texts else None,
        finish_reason=map_finish_reason(provider, response.get("finish_reason"), FINISH_REASONS),
        usage=usage_from_cohere(response.get("usage") or {}),
        tool_calls=tool_calls,
        upstream_model=model,
        upstream_id=response.get("id") or "",
    )


class StreamTranslator:
    """Turns Cohere v2 stream events (as dicts) into StreamEvents."""

    def __init__(self, provider: str, request: ChatRequest) -> None:
        self.provider = provider
        self.request = request
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.outputs: list[str] = []
        self._tools: dict[int, int] = {}  # Cohere event index -> OpenAI tool-call index
        self._with_arguments: set[int] = set()

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        message = ((event.get("delta") or {}).get("message")) or {}
        if kind in ("content-start", "content-delta"):
            return self._text(((message.get("content") or {}).get("text")) or "")
        if kind == "tool-call-start":
            return self._tool_start(event.get("index") or 0, _single(message.get("tool_calls")))
        if kind == "tool-call-delta":
            return self._tool_arguments(event.get("index") or 0, _single(message.get("tool_calls")))
        if kind == "tool-call-end":
            return self._tool_end(event.get("index") or 0)
        if kind == "message-end":
            self._end(event.get("delta") or {})
        return []

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        self.outputs.append(text)
        return [StreamEvent(content=text)]

    def _tool_start(self, index: int, call: dict[str, Any]) -> list[StreamEvent]:
        tool_index = len(self._tools)
        self._tools[index] = tool_index
        function = call.get("function") or {}
        start = ToolCallDelta(index=tool_index, id=call.get("id"), name=function.get("name"))
        return [StreamEvent(tool_call=start), *self._tool_arguments(index, call)]

    def _tool_arguments(self, index: int, call: dict[str, Any]) -> list[StreamEvent]:
        fragment = (call.get("function") or {}).get("arguments") or ""
        if not fragment or index not in self._tools:
            return []
        self._with_arguments.add(index)
        self.outputs.append(fragment)
        return [StreamEvent(tool_call=ToolCallDelta(index=self._tools[index], arguments=fragment))]

    def _tool_end(self, index: int) -> list[StreamEvent]:
        if index not in self._tools or index in self._with_arguments:
            return []
        # A call without arguments streams no fragment; send "{}" so the joined arguments parse.
        return [StreamEvent(tool_call=ToolCallDelta(index=self._tools[index], arguments="{}"))]

    def _end(self, delta: dict[str, Any]) -> None:
        reason = delta.get("finish_reason")
        if reason == "ERROR":
            detail = delta.get("error") or "no error message"
            raise Failure(ErrorKind.SERVER_ERROR, f"error in the stream: {detail}").to_error(self.provider)
        self.finish_reason = reason or "COMPLETE"
        self.usage = delta.get("usage")

    def finish(self) -> list[StreamEvent]:
        """Return the finish and usage events once the stream has ended."""
        if self.finish_reason is None:
            raise Failure(
                ErrorKind.CONNECTION, "the stream ended before its message-end event; the connection was cut"
            ).to_error(self.provider)
        finish_reason = map_finish_reason(self.provider, self.finish_reason, FINISH_REASONS)
        usage = usage_from_cohere(self.usage) if self.usage else estimated_usage(self.request, self.outputs)
        return [StreamEvent(finish_reason=finish_reason), StreamEvent(usage=usage)]


def _single(value: Any) -> dict[str, Any]:
    """Return the one tool call a stream event carries (an object, or a one-item list)."""
    if isinstance(value, list):
        return value[0] if value else {}
    return value if isinstance(value, dict) else {}


# -- embeddings -------------------------------------------------------------------------------


def embed_texts(request: EmbeddingRequest) -> list[str]:
    """Return the texts to embed; token-id input has no Cohere equivalent."""
    try:
        texts = request.texts()
    except TypeError:
        raise InvalidRequest(
            "Cohere embeds text only; send input as a string or a list of strings, not token ids",
            param="input",
        ) from None
    if not texts:
        raise InvalidRequest("input must contain at least one text", param="input")
    return texts


def embed_batches(texts: list[str]) -> list[list[str]]:
    return [texts[start : start + EMBED_BATCH_SIZE] for start in range(0, len(texts), EMBED_BATCH_SIZE)]


def embed_arguments(request: EmbeddingRequest, deployment: DeploymentConfig, provider: str) -> dict[str, Any]:
    """Return the v2 embed keyword arguments shared by every batch (all but `texts`)."""
    policy = ParamPolicy(provider, deployment)
    arguments: dict[str, Any] = {
        "model": upstream_model(provider, deployment),
        "input_type": deployment.input_type or DEFAULT_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    if request.dimensions is not None:
        arguments["output_dimension"] = request.dimensions
    if request.user is not None:
        policy.unsupported("user", "Cohere embed has no end-user field")
    policy.unsupported_extras(request.model_extra or {})
    return arguments
