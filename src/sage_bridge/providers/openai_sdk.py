"""The openai SDK, used only for embeddings, and the rules that classify its exceptions.

Importing the SDK and httpx2 added about 16 MB to the idle daemon. So the OpenAI adapter
imports this module on the first embeddings request, and a daemon that only chats never loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai

from sage_bridge.config.schema import OpenAIProviderConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.providers.errors_map import Failure, classify_by_rules, simple_rule as _simple
from sage_bridge.providers.openai_errors import status_failure, stream_error_failure

SDK_ERRORS: tuple[type[BaseException], ...] = (openai.OpenAIError, httpx2.HTTPError)


def make_client(config: OpenAIProviderConfig, key: str) -> openai.AsyncOpenAI:
    """Return an SDK client for `config` that never retries: the router decides about retries."""
    return openai.AsyncOpenAI(
        api_key=key,
        base_url=config.base_url,
        organization=config.organization,
        project=config.project,
        timeout=httpx2.Timeout(config.read_timeout, connect=config.connect_timeout),
        max_retries=0,
    )


def _status_failure(exc: openai.APIStatusError) -> Failure:
    return status_failure(
        exc.status_code, exc.body, exc.response.headers, message=exc.message, code=exc.code, error_type=exc.type
    )


def _stream_error_failure(exc: openai.APIError) -> Failure:
    return stream_error_failure(exc.body, message=exc.message, code=exc.code, error_type=exc.type)


# Checked in order, so a subclass comes before its base class.
_RULES: tuple[tuple[type[BaseException], Callable[[Any], Failure]], ...] = (
    (openai.APITimeoutError, _simple(ErrorKind.TIMEOUT, "the request timed out")),
    (openai.APIConnectionError, _simple(ErrorKind.CONNECTION, "the connection failed")),
    (openai.APIResponseValidationError, _simple(ErrorKind.SERVER_ERROR, "the response did not match the API schema")),
    (openai.APIStatusError, _status_failure),
    (openai.APIError, _stream_error_failure),
    (openai.LengthFinishReasonError, _simple(ErrorKind.INVALID_REQUEST, "the output limit cut the response")),
    (openai.ContentFilterFinishReasonError, _simple(ErrorKind.CONTENT_POLICY, "the content filter stopped the response")),
    (openai.WebSocketConnectionClosedError, _simple(ErrorKind.CONNECTION, "the websocket closed")),
    (openai.WebSocketQueueFullError, _simple(ErrorKind.OVERLOADED, "the websocket send queue is full")),
    (openai.InvalidWebhookSignatureError, _simple(ErrorKind.AUTH, "the webhook signature is invalid")),
    (httpx2.TimeoutException, _simple(ErrorKind.TIMEOUT, "the request timed out")),
    (httpx2.TransportError, _simple(ErrorKind.CONNECTION, "the connection failed")),
    (httpx2.HTTPError, _simple(ErrorKind.SERVER_ERROR, "the response could not be read")),
)


# Classes the SDK does not export, matched by name so that a moved private module cannot
# break the import of this adapter. All of them report misuse of the SDK or its credentials.
_PRIVATE_RULES: dict[str, Callable[[Any], Failure]] = {
    "SubjectTokenProviderError": _simple(ErrorKind.AUTH, "the credential provider failed"),
    "MutuallyExclusiveAuthError": _simple(ErrorKind.AUTH, "the client was given two kinds of credentials"),
    "StreamAlreadyConsumed": _simple(ErrorKind.SERVER_ERROR, "the response stream was read twice"),
    "APIRemovedInV1": _simple(ErrorKind.SERVER_ERROR, "a removed SDK interface was called"),
    "_AmbiguousModuleClientUsageError": _simple(ErrorKind.SERVER_ERROR, "the module-level client was misused"),
    "MissingDependencyError": _simple(ErrorKind.SERVER_ERROR, "an optional SDK dependency is missing"),
    # Helpers of the SDK's agents library, which chat and embedding calls never reach.
    "AgentOutputParseError": _simple(ErrorKind.SERVER_ERROR, "an agent helper failed"),
    "AgentTurnResultError": _simple(ErrorKind.SERVER_ERROR, "an agent helper failed"),
    "AgentFileStagingError": _simple(ErrorKind.SERVER_ERROR, "an agent helper failed"),
    "AgentFilePreparationError": _simple(ErrorKind.SERVER_ERROR, "an agent helper failed"),
}


# The SDK raises its bare base class for client-side problems, such as a missing key.
_BASE_RULE = (openai.OpenAIError, _simple(ErrorKind.SERVER_ERROR, "the SDK reported an error"))


def classify_error(exc: BaseException) -> Failure | None:
    """Classify an openai SDK or httpx2 exception; None means no rule covers its class."""
    return classify_by_rules(exc, _RULES, _PRIVATE_RULES, base=_BASE_RULE)
