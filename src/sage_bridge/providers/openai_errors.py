"""Classification of the OpenAI adapter's chat failures into Failure objects.

Chat requests go through openai_http (its HTTPPool raises aiohttp's exception classes as
well), so `classify_http_error` covers aiohttp and openai_http exceptions. Embeddings go
through the openai SDK, whose rule table is in openai_sdk, imported only when embeddings are
used. Both tables read an HTTP error status and a mid-stream error object through
`status_failure` and `stream_error_failure` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from sage_bridge.errors import ErrorKind
from sage_bridge.providers.errors_map import (
    Failure,
    body_error_code,
    body_error_type,
    body_text,
    classify_by_rules,
    kind_for_status,
    parse_retry_after,
    simple_rule as _simple,
)
from sage_bridge.providers.openai_http import OpenAIResponseError, OpenAIStatusError, OpenAIStreamError

# Exception classes the aiohttp chat path raises: aiohttp's errors, a timeout outside a socket
# read, and openai_http's own classes.
HTTP_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    OpenAIStatusError,
    OpenAIStreamError,
    OpenAIResponseError,
)

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"invalid_prompt", "content_policy_violation", "content_filter"})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_STREAM_ERROR_TYPES: dict[str, ErrorKind] = {
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "server_error": ErrorKind.SERVER_ERROR,
    "timeout": ErrorKind.TIMEOUT,
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
}


def _refine(kind: ErrorKind, code: str | None, error_type: str | None, text: str) -> ErrorKind:
    """Narrow a status-derived kind with the error code and message OpenAI sent."""
    if code in _CONTEXT_CODES or "maximum context length" in text:
        return ErrorKind.CONTEXT_LENGTH
    if code in _POLICY_CODES or "content management policy" in text:
        return ErrorKind.CONTENT_POLICY
    if kind is ErrorKind.RATE_LIMITED and (code in _QUOTA_CODES or error_type in _QUOTA_CODES):
        # An exhausted quota does not come back after a backoff, but another provider may serve.
        return ErrorKind.PERMISSION
    return kind


def status_failure(
    status: int,
    body: object,
    headers: Mapping[str, str] | None,
    *,
    message: str = "",
    code: str | None = None,
    error_type: str | None = None,
) -> Failure:
    """Classify an HTTP error status with OpenAI's error body ({"error": {"message", "type", "code"}})."""
    text = body_text(body) or message
    code = code or body_error_code(body)
    error_type = error_type or body_error_type(body)
    return Failure(
        _refine(kind_for_status(status), code, error_type, text),
        text,
        status=status,
        error_type=error_type or code,
        retry_after=parse_retry_after(headers),
    )


def stream_error_failure(
    body: object, *, message: str = "", code: str | None = None, error_type: str | None = None
) -> Failure:
    """Classify an error object sent as a data chunk in the middle of a stream (no HTTP status)."""
    text = body_text(body) or message
    code = code or body_error_code(body)
    error_type = error_type or body_error_type(body)
    kind = _STREAM_ERROR_TYPES.get(error_type or "", ErrorKind.SERVER_ERROR)
    return Failure(_refine(kind, code, error_type, text), f"error in the stream: {text}", error_type=error_type or code)


# -- the aiohttp chat path ----------------------------------------------------------------------


def _http_status_failure(exc: OpenAIStatusError) -> Failure:
    return status_failure(exc.status, exc.body, exc.headers, message=exc.message)


def _http_stream_failure(exc: OpenAIStreamError) -> Failure:
    return stream_error_failure(exc.body, message=exc.message)


def _response_status_failure(exc: aiohttp.ClientResponseError) -> Failure:
    # Raised for a proxy's refusal or a failed websocket handshake; the body is not kept.
    status = getattr(exc, "status", 0) or 0
    headers = getattr(exc, "headers", None)
    message = getattr(exc, "message", "") or ""
    if status < 300:
        return Failure(ErrorKind.SERVER_ERROR, f"the response could not be read: {message}")
    return status_failure(status, None, headers, message=message)


# Checked in order, so a subclass comes before its base class.
_HTTP_RULES: tuple[tuple[type[BaseException], Callable[[Any], Failure]], ...] = (
    (OpenAIStatusError, _http_status_failure),
    (OpenAIStreamError, _http_stream_failure),
    (OpenAIResponseError, _simple(ErrorKind.SERVER_ERROR, "the response did not match the API schema")),
    # ConnectionTimeoutError (connect) and SocketTimeoutError (read) are ServerTimeoutErrors.
    (aiohttp.ServerTimeoutError, _simple(ErrorKind.TIMEOUT, "the request timed out")),
    (TimeoutError, _simple(ErrorKind.TIMEOUT, "the request timed out")),
    (aiohttp.ClientConnectorCertificateError, _simple(ErrorKind.CONNECTION, "the TLS certificate was rejected")),
    (aiohttp.ServerFingerprintMismatch, _simple(ErrorKind.CONNECTION, "the TLS certificate fingerprint did not match")),
    # Refused, reset or dropped connections, DNS and proxy failures.
    (aiohttp.ClientConnectionError, _simple(ErrorKind.CONNECTION, "the connection failed")),
    # A body or stream cut before its end.
    (aiohttp.ClientPayloadError, _simple(ErrorKind.CONNECTION, "the response was cut off")),
    (aiohttp.UploadAbortedError, _simple(ErrorKind.CONNECTION, "sending the request failed")),
    (aiohttp.ContentTypeError, _simple(ErrorKind.SERVER_ERROR, "the response is not JSON")),
    (aiohttp.TooManyRedirects, _simple(ErrorKind.SERVER_ERROR, "the server redirected too often")),
    (aiohttp.ClientResponseError, _response_status_failure),
    # Before InvalidURL, which the redirect variants also subclass.
    (aiohttp.RedirectClientError, _simple(ErrorKind.SERVER_ERROR, "the server redirected to an invalid URL")),
    # A base_url that is not an http(s) URL: this provider cannot serve until the config changes.
    (aiohttp.InvalidURL, _simple(ErrorKind.NOT_FOUND, "base_url is not a valid HTTP URL; fix it in bridge.yaml")),
    (aiohttp.NonHttpUrlClientError, _simple(ErrorKind.NOT_FOUND, "base_url is not an http or https URL; fix it in bridge.yaml")),
    # Raised only by websocket clients, which the adapter does not open.
    (aiohttp.WSMessageTypeError, _simple(ErrorKind.SERVER_ERROR, "a websocket message had an unexpected type")),
)

# aiohttp raises its bare base class for nothing on this path; a new subclass it adds later
# stays unclassified, so the completeness test reports it.
_HTTP_BASE_RULE = (aiohttp.ClientError, _simple(ErrorKind.SERVER_ERROR, "the HTTP client reported an error"))


def classify_http_error(exc: BaseException) -> Failure | None:
    """Classify an aiohttp or openai_http exception; None means no rule covers its class."""
    return classify_by_rules(exc, _HTTP_RULES, base=_HTTP_BASE_RULE)
