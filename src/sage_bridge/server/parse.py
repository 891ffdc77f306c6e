"""Read and validate request bodies, turning every problem into a 4xx with a clear message."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sage_bridge.errors import InvalidRequest, PayloadTooLarge

ModelT = TypeVar("ModelT", bound=BaseModel)
_MAX_REPORTED_PROBLEMS = 5


async def read_json(request: web.Request, max_bytes: int) -> object:
    """Return the parsed JSON body, or raise InvalidRequest / PayloadTooLarge."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(request.content_length, max_bytes)
    body = await request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise _too_large(len(body), max_bytes)
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None


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


def _too_large(size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {size} bytes, more than the {max_bytes} bytes this bridge accepts; "
        "send less, or raise server.max_body_bytes in bridge.yaml"
    )
