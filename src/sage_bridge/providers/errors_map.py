"""What the adapters share when they turn a provider failure into an UpstreamError.

Each adapter classifies its own SDK's exception classes. This module contains the common
parts: HTTP status to ErrorKind, Retry-After parsing, the error text of a response body, and
scrubbing registered keys out of an SDK exception before it is chained to an UpstreamError.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sage_bridge.errors import ErrorKind, UpstreamDetail, UpstreamError
from sage_bridge.secrets import redact

logger = logging.getLogger(__name__)

_MAX_TEXT = 600  # characters of an upstream error message kept in our own message
_MAX_SCRUB_DEPTH = 8

_STATUS_KINDS: dict[int, ErrorKind] = {
    401: ErrorKind.AUTH,
    402: ErrorKind.PERMISSION,  # a billing or spend limit, which another provider may not have
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    # A conflict with a concurrent request on the provider's side. The same request can pass
    # when sent again, so it is retryable.
    409: ErrorKind.SERVER_ERROR,
    429: ErrorKind.RATE_LIMITED,
    498: ErrorKind.AUTH,  # Cohere: invalid token
    499: ErrorKind.CONNECTION,  # the request was closed before the provider responded
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}


def kind_for_status(status: int) -> ErrorKind:
    """Return the ErrorKind of an HTTP error status, before any provider-specific refinement."""
    if status in _STATUS_KINDS:
        return _STATUS_KINDS[status]
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.INVALID_REQUEST


def parse_retry_after(headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Return the wait in seconds that `retry-after-ms` or else `retry-after` requests.

    `retry-after` may be a number of seconds (fractions allowed) or an HTTP date, which is
    measured against `now` (Unix seconds). A value that cannot be parsed gives None; a date in
    the past gives 0.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}

    milliseconds = _finite_float(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000)

    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    return _seconds_until_http_date(raw, now)


def _finite_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds_until_http_date(raw: str, now: Callable[[], float]) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        logger.debug("ignoring a retry-after header that is neither seconds nor an HTTP date: %r", raw)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def body_text(body: object) -> str:
    """Return the human-readable message of an error body in any of the providers' shapes."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str):
        return body
    return ""


def body_error_type(body: object) -> str | None:
    """Return `error.type` (OpenAI, Anthropic) or `type` of an error body, when present."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    source = error if isinstance(error, Mapping) else body
    value = source.get("type")
    return value if isinstance(value, str) and value != "error" else None


def body_error_code(body: object) -> str | None:
    """Return the `code` of an OpenAI-shaped error body (or of its `error` object)."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    source = error if isinstance(error, Mapping) else body
    value = source.get("code")
    return str(value) if value is not None else None


def scrub_exception(exc: BaseException) -> None:
    """Mask registered keys in an exception and its causes, in place.

    The SDK exception stays chained to the UpstreamError (`__cause__`), so a traceback logged
    later prints its message and body. An upstream that echoes a key back must not leak it
    that way.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_MAX_SCRUB_DEPTH):
        if current is None or id(current) in seen:
            return
        seen.add(id(current))
        current.args = tuple(_redact_value(arg) for arg in current.args)
        for attribute in ("message", "body", "api_message", "headers"):
            if isinstance(getattr(current, attribute, None), (str, dict, list)):
                setattr(current, attribute, _redact_value(getattr(current, attribute)))
        current = current.__cause__ or current.__context__


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Failure:
    """One classified provider failure, ready to become an UpstreamError."""

    kind: ErrorKind
    text: str
    status: int | None = None
    error_type: str | None = None
    retry_after: float | None = None

    def to_error(self, provider: str) -> UpstreamError:
        text = " ".join(self.text.split())[:_MAX_TEXT] or self.kind.label.replace("_", " ")
        if self.status is not None and self.status >= 400:
            label = f" ({self.error_type})" if self.error_type else ""
            message = f'provider "{provider}" returned HTTP {self.status}{label}: {text}'
        else:
            message = f'provider "{provider}": {text}'
        detail = UpstreamDetail(
            provider=provider,
            status=self.status,
            provider_error_type=self.error_type,
            retry_after=self.retry_after,
        )
        # Redacted here as well as in BridgeError, because str(error) keeps the raw argument.
        return UpstreamError(self.kind, redact(message), detail)


Rule = Callable[[Any], Failure]


def simple_rule(kind: ErrorKind, text: str) -> Rule:
    """Return a rule that maps any exception of a class to `kind`, with `text` before its message."""

    def rule(exc: BaseException) -> Failure:
        detail = exception_text(exc)
        return Failure(kind, f"{text}: {detail}" if detail else text)

    return rule


def exception_text(exc: BaseException) -> str:
    """Return str(exc), or its arguments when a custom __str__ fails on a half-built instance."""
    try:
        return str(exc)
    except Exception:  # mapping an error must not raise a new one
        return " ".join(str(arg) for arg in exc.args)


def classify_by_rules(
    exc: BaseException,
    rules: tuple[tuple[type[BaseException], Rule], ...],
    private_rules: Mapping[str, Rule] | None = None,
    *,
    base: tuple[type[BaseException], Rule] | None = None,
) -> Failure | None:
    """Apply the first rule whose class `exc` is an instance of, else a rule named after a class
    in its MRO, else the `base` rule when `exc` is exactly the SDK's base class.

    The base rule deliberately skips subclasses: a class the SDK adds later then stays
    unclassified (None), which the adapters log and a test reports.
    """
    for cls, rule in rules:
        if isinstance(exc, cls):
            return rule(exc)
    for cls in type(exc).__mro__:
        if private_rules and cls.__name__ in private_rules:
            return private_rules[cls.__name__](exc)
    if base is not None and type(exc) is base[0]:
        return base[1](exc)
    return None


def to_upstream_error(
    provider: str, exc: BaseException, classify: Callable[[BaseException], Failure | None]
) -> UpstreamError:
    """Scrub `exc`, classify it with the adapter's rules and build the UpstreamError to raise.

    An exception class no rule covers is still mapped (to SERVER_ERROR, so it is retried) and
    logged at WARNING, because it means the SDK grew a class the adapter does not know yet.
    """
    scrub_exception(exc)
    failure = classify(exc)
    if failure is None:
        logger.warning(
            "provider %s raised %s, which no error rule covers; treating it as a server error",
            provider,
            type(exc).__qualname__,
        )
        failure = Failure(ErrorKind.SERVER_ERROR, f"{type(exc).__name__}: {exception_text(exc)}")
    logger.debug(
        "provider %s: %s mapped to %s (status %s)", provider, type(exc).__name__, failure.kind.label, failure.status
    )
    return failure.to_error(provider)
