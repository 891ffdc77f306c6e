"""Read and validate request bodies, turning every problem into a 4xx with a clear message.

Besides the body size, the parser caps what makes a body expensive to validate, count or
forward: the nesting depth, the integer and float range, the number of chat messages and the
characters of text. Each cap is a `server.*` setting in bridge.yaml.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from sage_bridge.config.schema import ServerConfig
from sage_bridge.errors import InvalidRequest, PayloadTooLarge
from sage_bridge.server.keys import RUNTIME

ModelT = TypeVar("ModelT", bound=BaseModel)
_MAX_REPORTED_PROBLEMS = 5
_MAX_INT_DIGITS = 19  # every signed 64-bit integer fits; larger ones fit no provider's parameters
_INT64 = 2**63
# A \u escape of a UTF-16 surrogate: part of a valid pair, or a lone one that no encoder accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Byte patterns that only the careful parser handles: a run of 19 digits (an integer that may
# leave the signed 64-bit range) or a surrogate escape.
_NEEDS_CARE = re.compile(rb"[0-9]{19}|\\u[dD][89a-fA-F]")
_CAREFUL = object()  # returned by _parse_plain when the careful parser must run


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_messages: int = ServerConfig.model_fields["max_messages"].default
    max_content_chars: int = ServerConfig.model_fields["max_content_chars"].default
    max_json_depth: int = ServerConfig.model_fields["max_json_depth"].default

    @classmethod
    def of(cls, server: ServerConfig) -> InputLimits:
        return cls(server.max_messages, server.max_content_chars, server.max_json_depth)


async def read_json(request: web.Request, max_bytes: int) -> object:
    """Return the parsed JSON body, or raise InvalidRequest / PayloadTooLarge."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(request.content_length, max_bytes)
    body = await request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise _too_large(len(body), max_bytes)
    return parse_body(body, _limits(request))


def parse_body(body: bytes, limits: InputLimits = InputLimits()) -> object:
    """Parse a request body and check it against `limits`; raise InvalidRequest if it fails."""
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    data = _parse_plain(body)
    if data is _CAREFUL:
        data = _parse_carefully(body, limits)
    check_depth(data, limits.max_json_depth)
    if isinstance(data, dict):
        check_messages(data, limits)
    return data


def _parse_plain(body: bytes) -> object:
    """Parse a body with orjson, or return _CAREFUL when the careful parser must parse it.

    orjson turns integers above 64 bits into floats and reports errors in its own words, so
    bodies with long digit runs or surrogate escapes, and bodies it rejects, go to the careful
    parser, which explains each problem.
    """
    if _NEEDS_CARE.search(body):
        return _CAREFUL
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _CAREFUL


def _parse_carefully(body: bytes, limits: InputLimits) -> object:
    try:
        data = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(limits.max_json_depth) from None
    if _SURROGATE_ESCAPE.search(body):
        check_unicode(data)
    return data


def check_depth(data: object, max_depth: int) -> None:
    """Raise InvalidRequest when arrays and objects nest more than `max_depth` levels."""
    # Level by level, because a recursive walk would itself hit Python's recursion limit.
    level: list[dict[str, object] | list[object]] = [data] if isinstance(data, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise _too_deep(max_depth)
        children: list[dict[str, object] | list[object]] = []
        for node in level:
            values = node.values() if isinstance(node, dict) else node
            children += [child for child in values if isinstance(child, (dict, list))]
        level = children


def check_unicode(data: object) -> None:
    """Raise InvalidRequest when a string contains a lone surrogate, which cannot be sent on as UTF-8."""
    stack: list[object] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(
                    "the request body has a string with an unpaired UTF-16 surrogate escape (\\ud800 to \\udfff); "
                    "send valid Unicode"
                ) from None


def check_messages(data: dict[str, object], limits: InputLimits) -> None:
    """Cap the message count and the text characters of a chat or embeddings body."""
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequest(
            f"the request has {len(messages)} messages, more than the {limits.max_messages} this bridge accepts; "
            "send fewer, or raise server.max_messages in bridge.yaml",
            param="messages", code="array_above_max_length",
        )
    chars = _message_chars(messages) + _input_chars(data.get("input"))
    if chars > limits.max_content_chars:
        raise InvalidRequest(
            f"the request has {chars} characters of text, more than the {limits.max_content_chars} this bridge "
            "accepts; send less, or raise server.max_content_chars in bridge.yaml",
            param="input" if "input" in data else "messages", code="string_above_max_length",
        )


def validate(model: type[ModelT], data: object) -> ModelT:
    """Validate `data` against `model`; the error names each bad field and what was expected."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()[:_MAX_REPORTED_PROBLEMS]]
        first = exc.errors()[0]["loc"]
        raise InvalidRequest("; ".join(problems), param=_param(first)) from None


def _limits(request: web.Request) -> InputLimits:
    runtime = request.app.get(RUNTIME)
    return InputLimits() if runtime is None else InputLimits.of(runtime.graph.loaded.config.server)


def _message_chars(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part["text"]) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return total


def _input_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(item) for item in value if isinstance(item, str))
    return 0


def _parse_int(text: str) -> int:
    # Checked before int() runs: Python refuses to convert more than 4300 digits with a
    # ValueError, and a large enough number is slow to convert at all.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or not -_INT64 <= (value := int(text)) < _INT64:
        raise InvalidRequest(f"the request body has the integer {text[:30]}, outside the signed 64-bit range")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"the request body has the number {text[:30]}, too large for a 64-bit float")
    return value


def _reject_constant(name: str) -> float:
    raise InvalidRequest(f"the request body is not valid JSON: {name} is not a JSON number")


def _describe(error: object) -> str:
    assert isinstance(error, dict)
    where = _param(error["loc"]) or "body"
    if error["type"] == "missing":
        return f"'{where}' is required"
    if error["type"] == "extra_forbidden":
        return f"'{where}' is not a recognised field"
    return f"'{where}': {error['msg']}"


def _param(loc: tuple[object, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "list[...]", "function-after[...]") or str(part).startswith(("list[", "literal[", "dict[")):
            continue  # pydantic's union member tags say nothing useful to a client
        else:
            text += f".{part}" if text else str(part)
    return text


def _too_deep(max_depth: int) -> InvalidRequest:
    return InvalidRequest(
        f"the request body nests arrays and objects more than {max_depth} levels deep; flatten it, "
        "or raise server.max_json_depth in bridge.yaml"
    )


def _too_large(size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {size} bytes, more than the {max_bytes} bytes this bridge accepts; "
        "send less, or raise server.max_body_bytes in bridge.yaml"
    )
