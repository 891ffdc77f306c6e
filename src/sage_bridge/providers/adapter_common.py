"""Helpers that every cloud adapter shares.

They cover what is the same across providers: reading the configured key and the
drop-or-reject policy for parameters a provider cannot honour. They also cover finish-reason
tables with a logged default, data-URL parsing for images, and a local usage estimate for
streams that ended without a usage report.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind, InvalidRequest, UnsupportedParameter, UpstreamDetail, UpstreamError
from sage_bridge.secrets import register_secret
from sage_bridge.types import ChatRequest, FinishReason, ImagePart, Message, TextPart, ToolCall, Usage

logger = logging.getLogger(__name__)

#: finish reason used for a provider value the bridge does not know (pause_turn, ERROR, ...)
DEFAULT_FINISH_REASON: FinishReason = "stop"

# A rough English average. The estimate only fills in for a missing usage report, and the
# Usage it produces is flagged `estimated` so cost accounting can tell.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4

#: `api_key: none` in bridge.yaml marks a server that needs no key; SDKs still require one
NO_KEY_MARKER = "none"
PLACEHOLDER_KEY = "sk-no-key-required"


def configured_key(api_key: SecretStr | None) -> str | None:
    """Return the key to send upstream, a placeholder for "none", or None when it is empty."""
    if api_key is None:
        return None
    value = api_key.get_secret_value()
    if value == "":
        return None
    if value.lower() == NO_KEY_MARKER:
        return PLACEHOLDER_KEY
    register_secret(value)
    return value


def missing_key_reason(provider: str) -> str:
    return (
        f'provider "{provider}": api_key is empty; set the environment variable bridge.yaml reads it '
        'from, or write api_key: none for a server that needs no key'
    )


def upstream_model(provider: str, deployment: DeploymentConfig) -> str:
    """Return the provider's model name for `deployment`, which cloud deployments must set."""
    if not deployment.model:
        raise UpstreamError(
            ErrorKind.NOT_FOUND,
            f'a deployment on provider "{provider}" has no model; set model: to the provider\'s model name',
            UpstreamDetail(provider=provider),
        )
    return deployment.model


_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Keep the response headers that say how much rate-limit room the provider has left."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith(_RATE_LIMIT_PREFIXES) or name.lower() in ("retry-after", "retry-after-ms")
    }


def root_url(provider: str, base_url: str | None, sdk: str, suffixes: tuple[str, ...]) -> str | None:
    """Return base_url without a trailing version path (such as /v1) that the SDK adds itself."""
    if base_url is None:
        return None
    trimmed = base_url.rstrip("/")
    for suffix in suffixes:
        if trimmed.endswith(suffix):
            root = trimmed[: -len(suffix)]
            logger.warning(
                "provider %s: base_url %s ends in %s, which the %s SDK adds itself; using %s",
                provider, base_url, suffix, sdk, root,
            )
            return root
    return base_url


class ParamPolicy:
    """Drop or reject the request parameters one provider cannot honour.

    The deployment's `unsupported_params` decides: "reject" raises UnsupportedParameter naming the
    parameter, "drop" leaves it out of the upstream request and logs it at DEBUG.
    """

    def __init__(self, provider: str, deployment: DeploymentConfig) -> None:
        self.provider = provider
        self.model = deployment.model or ""
        self.reject = deployment.unsupported_params == "reject"

    def unsupported(self, param: str, reason: str) -> None:
        """Apply the policy to `param`; return only when the parameter may be dropped."""
        if self.reject:
            raise UnsupportedParameter(
                f'parameter "{param}" is not supported by provider "{self.provider}" ({reason}); '
                "remove it from the request, or set unsupported_params: drop on the deployment "
                "to have the bridge leave it out",
                param=param,
            )
        logger.debug(
            "dropping parameter %s for provider %s model %s: %s", param, self.provider, self.model, reason
        )

    def unsupported_extras(self, extras: Mapping[str, Any]) -> None:
        """Apply the policy to every parameter the unified request does not model."""
        for name in sorted(extras):
            self.unsupported(name, "the bridge has no translation for it")


def reject_several_choices(request: ChatRequest, provider: str) -> None:
    """Raise UnsupportedParameter when the client asks for more than one choice."""
    if request.n is not None and request.n > 1:
        raise UnsupportedParameter(
            f'provider "{provider}" is called for one choice per request, but the request has n={request.n}; '
            "send n=1 (or leave n out) and make several requests instead",
            param="n",
        )


def map_finish_reason(provider: str, value: str | None, table: Mapping[str, FinishReason]) -> FinishReason:
    """Translate a provider's finish reason; an unknown one is logged and becomes "stop"."""
    if value is not None and value in table:
        return table[value]
    logger.warning(
        "provider %s returned the unknown finish reason %r; reporting %r to the client",
        provider,
        value,
        DEFAULT_FINISH_REASON,
    )
    return DEFAULT_FINISH_REASON


def parse_data_url(url: str) -> tuple[str, str] | None:
    """Split a base64 data URL into (media type, base64 data); return None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[len("data:") :].partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(
            "an image data URL must have the form data:<media type>;base64,<data>", param="messages"
        )
    return header[: -len(";base64")], data


def parse_tool_arguments(call: ToolCall) -> dict[str, Any]:
    """Decode a tool call's JSON arguments into the object providers expect."""
    text = call.function.arguments.strip() or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f'tool call "{call.id}" ({call.function.name}) has arguments that are not valid JSON: {exc.msg}; '
            "send the arguments as a JSON object encoded in a string",
            param="messages",
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f'tool call "{call.id}" ({call.function.name}) has arguments that are not a JSON object',
            param="messages",
        )
    return value


def message_parts(message: Message) -> list[TextPart | ImagePart]:
    """Return a message's content as parts; a plain string becomes one text part."""
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [TextPart(type="text", text=message.content)]
    return list(message.content)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """Estimate the input tokens of a request from its text, tool calls and tool definitions."""
    total = 0
    for message in request.messages:
        total += _TOKENS_PER_MESSAGE + estimate_tokens(message.text())
        for call in message.tool_calls or []:
            total += estimate_tokens(call.function.name + call.function.arguments)
    for tool in request.tools or []:
        total += estimate_tokens(tool.function.model_dump_json(exclude_none=True))
    return total


def estimated_usage(request: ChatRequest, outputs: Iterable[str]) -> Usage:
    """Build a Usage flagged as estimated from the request and the generated text pieces."""
    completion = estimate_tokens("".join(outputs))
    return Usage(prompt_tokens=estimate_prompt_tokens(request), completion_tokens=completion, estimated=True)
