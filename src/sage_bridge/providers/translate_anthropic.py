"""Translation between the unified chat types and Anthropic's Messages API, without I/O.

System and developer messages join the top-level `system`. Tool results go into user turns,
before any text. Adjacent turns of one role merge, because the API rejects two user (or
assistant) turns in a row. Responses and stream events arrive as plain dicts (the SDK objects
dumped), so everything here is testable without a server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind, InvalidRequest
from sage_bridge.providers.adapter_common import (
    ParamPolicy,
    estimated_usage,
    map_finish_reason,
    message_parts,
    parse_data_url,
    parse_tool_arguments,
    reject_several_choices,
    upstream_model,
)
from sage_bridge.providers.errors_map import Failure
from sage_bridge.types import (
    ChatRequest,
    ChatResult,
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

#: output cap sent when neither the request nor the deployment sets one (the API requires one)
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# anthropic 2.17.0 sends anthropic-version 2026-10-21 and has no temperature, top_p or top_k
# arguments. NOTE: that this API version rejects them with a 400 is known from third-party
# reports, not from Anthropic's reference.
_SAMPLING_REMOVED = "Anthropic API version 2026-10-21 rejects sampling parameters"


def build_request(request: ChatRequest, deployment: DeploymentConfig, provider: str) -> dict[str, Any]:
    """Return the keyword arguments for `messages.create` (without `stream`)."""
    reject_several_choices(request, provider)
    policy = ParamPolicy(provider, deployment)
    system, messages = translate_messages(request.messages, policy)

    arguments: dict[str, Any] = {
        "model": upstream_model(provider, deployment),
        "max_tokens": request.output_limit or deployment.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        arguments["system"] = system
    if request.stop_list:
        arguments["stop_sequences"] = request.stop_list
    if request.tools:
        arguments["tools"] = [_tool(tool) for tool in request.tools]
    tool_choice = _tool_choice(request)
    if tool_choice is not None:
        arguments["tool_choice"] = tool_choice
    if request.user is not None:
        arguments["metadata"] = {"user_id": request.user}
    output_config = _output_config(request.response_format, policy)
    if output_config is not None:
        arguments["output_config"] = output_config

    _drop_or_reject_unsupported(request, policy)
    return arguments


def _drop_or_reject_unsupported(request: ChatRequest, policy: ParamPolicy) -> None:
    if request.temperature is not None:
        policy.unsupported("temperature", _SAMPLING_REMOVED)
    if request.top_p is not None:
        policy.unsupported("top_p", _SAMPLING_REMOVED)
    if request.seed is not None:
        policy.unsupported("seed", "Anthropic has no seeded sampling")
    policy.unsupported_extras(request.extra_params)


# -- messages ---------------------------------------------------------------------------------


def translate_messages(messages: list[Message], policy: ParamPolicy) -> tuple[str, list[dict[str, Any]]]:
    """Return the joined system prompt and the alternating user/assistant turns."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if message.name is not None:
            policy.unsupported("messages[].name", "Anthropic messages carry no author name")
        if message.role in ("system", "developer"):
            system_parts.append(_system_text(message, position))
            continue

        blocks = _content_blocks(message, position, policy)
        if not blocks:
            logger.debug("leaving out messages[%d] (%s): it has no content", position, message.role)
            continue
        _append_turn(turns, "assistant" if message.role == "assistant" else "user", blocks)
    return "\n\n".join(part for part in system_parts if part), turns


def _system_text(message: Message, position: int) -> str:
    if any(isinstance(part, ImagePart) for part in message_parts(message)):
        raise InvalidRequest(
            f"messages[{position}] ({message.role}) contains an image; Anthropic takes images in user "
            "messages only, so move the image to a user message",
            param="messages",
        )
    return message.text().strip()


def _content_blocks(message: Message, position: int, policy: ParamPolicy) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [_tool_result(message, position)]

    blocks: list[dict[str, Any]] = []
    for part in message_parts(message):
        if isinstance(part, TextPart):
            # The API rejects empty and whitespace-only text blocks.
            if part.text.strip():
                blocks.append({"type": "text", "text": part.text})
        elif message.role == "user":
            blocks.append(_image_block(part, position, policy))
        else:
            raise InvalidRequest(f"messages[{position}] ({message.role}) may not contain images", param="messages")

    calls = message.tool_calls if message.role == "assistant" and message.tool_calls else []
    for call in calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": parse_tool_arguments(call)})
    return blocks


def _tool_result(message: Message, position: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequest(f"messages[{position}] (tool) has no tool_call_id", param="messages")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    text = message.text()
    if text.strip():
        block["content"] = text
    return block


def _image_block(part: ImagePart, position: int, policy: ParamPolicy) -> dict[str, Any]:
    if part.image_url.detail not in (None, "auto"):
        policy.unsupported("image_url.detail", "Anthropic has no image detail setting")
    url = part.image_url.url
    data_url = parse_data_url(url)
    if data_url is not None:
        media_type, data = data_url
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"messages[{position}] has an image of type {media_type}; Anthropic accepts "
                f"{', '.join(sorted(_IMAGE_MEDIA_TYPES))}",
                param="messages",
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith("https://"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(
        f"messages[{position}] has an image URL that is neither https:// nor a base64 data URL",
        param="messages",
    )


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": blocks})
        return
    merged = turns[-1]["content"] + blocks
    if role == "user":
        # Tool results must open the user turn that follows an assistant's tool calls.
        merged.sort(key=lambda block: block["type"] != "tool_result")
    turns[-1]["content"] = merged


# -- tools and output format ------------------------------------------------------------------


def _tool(tool: Tool) -> dict[str, Any]:
    function = tool.function
    translated: dict[str, Any] = {
        "name": function.name,
        "input_schema": function.parameters or {"type": "object", "properties": {}},
    }
    if function.description:
        translated["description"] = function.description
    if function.strict:
        translated["strict"] = True
    return translated


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    translated: dict[str, Any] | None
    if choice is None or (not request.tools and choice in ("auto", "none")):
        translated = {"type": "auto"} if request.tools and request.parallel_tool_calls is False else None
    elif choice == "auto":
        translated = {"type": "auto"}
    elif choice == "required":
        translated = {"type": "any"}
    elif choice == "none":
        translated = {"type": "none"}
    else:
        translated = {"type": "tool", "name": _named_tool(choice)}

    if translated is not None and request.parallel_tool_calls is False and translated["type"] != "none":
        translated["disable_parallel_tool_use"] = True
    return translated


def _named_tool(choice: dict[str, Any]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "auto", "required", "none" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    return name


def _output_config(response_format: dict[str, Any] | None, policy: ParamPolicy) -> dict[str, Any] | None:
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        return {"format": {"type": "json_schema", "schema": schema}}
    policy.unsupported(
        "response_format", f"Anthropic has no {kind} mode; send a json_schema response_format instead"
    )
    return None


# -- responses --------------------------------------------------------------------------------


def usage_from_anthropic(raw: dict[str, Any]) -> Usage:
    """Translate Anthropic usage, whose input_tokens leaves out cache reads and writes."""
    fresh = raw.get("input_tokens") or 0
    written = raw.get("cache_creation_input_tokens") or 0
    read = raw.get("cache_read_input_tokens") or 0
    return Usage(
        prompt_tokens=fresh + written + read,
        completion_tokens=raw.get("output_tokens") or 0,
        cached_tokens=read,
        cache_write_tokens=written,
        raw={key: value for key, value in raw.items() if value is not None},
    )


def parse_message(provider: str, message: dict[str, Any]) -> ChatResult:
    """Translate a non-streamed Messages response."""
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {})
            tool_calls.append(ToolCall(id=block["id"], function=FunctionCall(name=block["name"], arguments=arguments)))
        else:
            logger.debug("ignoring a %s content block from provider %s", block.get("type"), provider)

    return ChatResult(
        content="".join(texts) if texts else None,
        finish_reason=map_finish_reason(provider, message.get("stop_reason"), FINISH_REASONS),
        usage=usage_from_anthropic(message.get("usage") or {}),
        tool_calls=tool_calls,
        upstream_model=message.get("model") or "",
        upstream_id=message.get("id") or "",
    )


@dataclass(slots=True)
class _ToolBlock:
    index: int  # OpenAI tool-call index, counted over tool_use blocks only
    initial_input: dict[str, Any]
    sent_arguments: bool = False


class StreamTranslator:
    """Turns Anthropic stream events (as dicts) into StreamEvents.

    Anthropic's `index` numbers every content block, text and tool_use alike; OpenAI's
    tool-call index counts tool calls only, so tool_use blocks get their own counter.
    """

    def __init__(self, provider: str, request: ChatRequest) -> None:
        self.provider = provider
        self.request = request
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.outputs: list[str] = []
        self._tools: dict[int, _ToolBlock] = {}
        self._tool_count = 0

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind == "message_start":
            self._merge_usage((event.get("message") or {}).get("usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(event["index"], event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event.get("delta") or {})
        if kind == "content_block_stop":
            return self._block_stop(event["index"])
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._merge_usage(event.get("usage"))
            return []
        if kind != "message_stop":
            logger.debug("ignoring a %s stream event from provider %s", kind, self.provider)
        return []

    def _merge_usage(self, usage: dict[str, Any] | None) -> None:
        # message_delta carries cumulative counts, so a later value replaces an earlier one.
        self.usage.update({key: value for key, value in (usage or {}).items() if value is not None})

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        if block.get("type") == "text":
            return self._text(block.get("text") or "")
        if block.get("type") != "tool_use":
            return []
        tool = _ToolBlock(index=self._tool_count, initial_input=block.get("input") or {})
        self._tool_count += 1
        self._tools[index] = tool
        return [StreamEvent(tool_call=ToolCallDelta(index=tool.index, id=block["id"], name=block["name"]))]

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        if delta.get("type") == "text_delta":
            return self._text(delta.get("text") or "")
        tool = self._tools.get(index)
        if delta.get("type") != "input_json_delta" or tool is None:
            return []
        fragment = delta.get("partial_json") or ""
        if not fragment:
            return []
        tool.sent_arguments = True
        self.outputs.append(fragment)
        return [StreamEvent(tool_call=ToolCallDelta(index=tool.index, arguments=fragment))]

    def _block_stop(self, index: int) -> list[StreamEvent]:
        tool = self._tools.pop(index, None)
        if tool is None or tool.sent_arguments:
            return []
        # A call without arguments streams no fragment; send "{}" so the joined arguments parse.
        arguments = json.dumps(tool.initial_input)
        return [StreamEvent(tool_call=ToolCallDelta(index=tool.index, arguments=arguments))]

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        self.outputs.append(text)
        return [StreamEvent(content=text)]

    def finish(self) -> list[StreamEvent]:
        """Return the finish and usage events once the stream has ended."""
        if self.stop_reason is None:
            raise Failure(
                ErrorKind.CONNECTION, "the stream ended before its message_delta event; the connection was cut"
            ).to_error(self.provider)
        finish_reason = map_finish_reason(self.provider, self.stop_reason, FINISH_REASONS)
        if "output_tokens" in self.usage:
            usage = usage_from_anthropic(self.usage)
        else:
            usage = estimated_usage(self.request, self.outputs)
        return [StreamEvent(finish_reason=finish_reason), StreamEvent(usage=usage)]
