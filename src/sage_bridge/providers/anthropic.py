"""The adapter for Anthropic's Messages API, through the official SDK.

Translation lives in translate_anthropic; this module owns the SDK client, the calls and the
mapping of the SDK's exceptions onto UpstreamError.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx2

from sage_bridge.config.schema import AnthropicProviderConfig, DeploymentConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.providers.adapter_common import configured_key, missing_key_reason, rate_limit_headers, root_url
from sage_bridge.providers.base import Provider
from sage_bridge.providers.errors_map import (
    Failure,
    body_error_type,
    body_text,
    classify_by_rules,
    kind_for_status,
    parse_retry_after,
    simple_rule,
    to_upstream_error,
)
from sage_bridge.providers.translate_anthropic import StreamTranslator, build_request, parse_message
from sage_bridge.types import ChatRequest, ChatResult, StreamEvent

logger = logging.getLogger(__name__)

SDK_ERRORS: tuple[type[BaseException], ...] = (anthropic.AnthropicError, httpx2.HTTPError)


class AnthropicProvider(Provider):
    """One Anthropic account, with one pooled SDK client."""

    type_name = "anthropic"

    def __init__(self, name: str, config: AnthropicProviderConfig) -> None:
        super().__init__(name, config)
        self._client: anthropic.AsyncAnthropic | None = None
        self._timeout = httpx2.Timeout(config.read_timeout, connect=config.connect_timeout)
        key = configured_key(config.api_key)
        if key is not None:
            self._client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=root_url(name, config.base_url, "Anthropic", ("/v1",)),
                timeout=self._timeout,
                max_retries=0,
            )

    def disabled_reason(self) -> str | None:
        return None if self._client is not None else missing_key_reason(self.name)

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        arguments = build_request(request, deployment, self.name)
        try:
            # An explicit timeout keeps the SDK from rejecting a large max_tokens without
            # streaming, which it does (ValueError) when the client has its default timeout.
            raw = await self._sdk().messages.with_raw_response.create(**arguments, timeout=self._timeout)
            message = await raw.parse()
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc
        result = parse_message(self.name, message.model_dump())
        result.rate_limits = rate_limit_headers(raw.headers)
        return result

    async def stream_chat(
        self, request: ChatRequest, deployment: DeploymentConfig
    ) -> AsyncIterator[StreamEvent]:
        arguments = build_request(request, deployment, self.name)
        translator = StreamTranslator(self.name, request)
        try:
            raw = await self._sdk().messages.with_raw_response.create(**arguments, stream=True, timeout=self._timeout)
            yield StreamEvent(rate_limits=rate_limit_headers(raw.headers))
            stream = await raw.parse()
            async with stream:
                async for event in stream:
                    for translated in translator.feed(event.model_dump()):
                        yield translated
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc

        for translated in translator.finish():
            yield translated

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _sdk(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            raise Failure(ErrorKind.AUTH, missing_key_reason(self.name)).to_error(self.name)
        return self._client


# -- error classification ---------------------------------------------------------------------

# `error.type` values, used for errors sent inside a stream (the HTTP status there is 200).
_ERROR_TYPES: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.PERMISSION,
    "billing_error": ErrorKind.PERMISSION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.INVALID_REQUEST,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "timeout_error": ErrorKind.TIMEOUT,
    "api_error": ErrorKind.SERVER_ERROR,
    "overloaded_error": ErrorKind.OVERLOADED,
}
_CONTEXT_MESSAGES = ("prompt is too long", "exceed context limit", "exceeds the context window")
# Spend caps reached on the Anthropic account: a backoff does not help, another provider may.
_SPEND_LIMIT_CODES = frozenset(
    {
        "contract_spend_limit_reached",
        "enforced_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)


def _status_failure(exc: anthropic.APIStatusError) -> Failure:
    error_type = exc.type or body_error_type(exc.body)
    text = exc.api_message or body_text(exc.body) or exc.message
    in_stream = exc.status_code < 400
    if in_stream:
        kind = _ERROR_TYPES.get(error_type or "", ErrorKind.SERVER_ERROR)
        text = f"error in the stream: {text}"
    else:
        kind = kind_for_status(exc.status_code)

    if any(marker in text for marker in _CONTEXT_MESSAGES):
        kind = ErrorKind.CONTEXT_LENGTH
    elif exc.error_code in _SPEND_LIMIT_CODES:
        kind = ErrorKind.PERMISSION
    return Failure(
        kind,
        text,
        status=None if in_stream else exc.status_code,
        error_type=error_type,
        retry_after=parse_retry_after(exc.response.headers),
    )


# Checked in order, so a subclass comes before its base class.
_RULES: tuple[tuple[type[BaseException], Callable[[Any], Failure]], ...] = (
    (anthropic.APITimeoutError, simple_rule(ErrorKind.TIMEOUT, "the request timed out")),
    (anthropic.APIConnectionError, simple_rule(ErrorKind.CONNECTION, "the connection failed")),
    (
        anthropic.APIResponseValidationError,
        simple_rule(ErrorKind.SERVER_ERROR, "the response did not match the API schema"),
    ),
    (anthropic.APIWebhookValidationError, simple_rule(ErrorKind.SERVER_ERROR, "a webhook payload was invalid")),
    (anthropic.APIStatusError, _status_failure),
    (anthropic.APIError, simple_rule(ErrorKind.SERVER_ERROR, "the API call failed")),
    (anthropic.RetryableError, simple_rule(ErrorKind.SERVER_ERROR, "the SDK asked for a retry")),
    (anthropic.CredentialsError, simple_rule(ErrorKind.AUTH, "the credentials could not be loaded")),
    (httpx2.TimeoutException, simple_rule(ErrorKind.TIMEOUT, "the request timed out")),
    (httpx2.TransportError, simple_rule(ErrorKind.CONNECTION, "the connection failed")),
    (httpx2.HTTPError, simple_rule(ErrorKind.SERVER_ERROR, "the response could not be read")),
)


# Classes the SDK does not export, matched by name (a subclass matches through its MRO) so that
# a moved private module cannot break the import of this adapter.
_PRIVATE_RULES: dict[str, Callable[[Any], Failure]] = {
    "WorkloadIdentityError": simple_rule(ErrorKind.AUTH, "the workload identity could not be loaded"),
    "MutuallyExclusiveAuthError": simple_rule(ErrorKind.AUTH, "the client was given two kinds of credentials"),
    "MissingDependencyError": simple_rule(ErrorKind.SERVER_ERROR, "an optional SDK dependency is missing"),
    "StreamAlreadyConsumed": simple_rule(ErrorKind.SERVER_ERROR, "the response stream was read twice"),
    "ToolsetUsageError": simple_rule(ErrorKind.SERVER_ERROR, "an SDK tool helper was misused"),
}

# The SDK raises its bare base class for client-side problems, such as invalid arguments.
_BASE_RULE = (anthropic.AnthropicError, simple_rule(ErrorKind.SERVER_ERROR, "the SDK reported an error"))


def classify_error(exc: BaseException) -> Failure | None:
    """Classify an anthropic SDK or httpx2 exception; None means no rule covers its class."""
    return classify_by_rules(exc, _RULES, _PRIVATE_RULES, base=_BASE_RULE)
