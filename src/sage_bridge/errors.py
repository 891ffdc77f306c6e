"""The bridge's exception tree.

    BridgeError                    anything the bridge answers with an OpenAI-shaped error body
    ├── RequestError               the request cannot be served as sent (answered at once)
    │   ├── InvalidRequest         400: malformed JSON, missing or wrongly typed fields
    │   │   └── UnsupportedParameter   400: a deployment cannot honour a parameter (the router
    │   │                              tries the next target before answering with it)
    │   ├── ContextLengthExceeded  400: the prompt does not fit the model's context window
    │   ├── Forbidden              403: the caller is not allowed to use the bridge
    │   ├── ModelNotFound          404: no route or deployment has this name
    │   ├── PayloadTooLarge        413: the body is larger than the configured cap
    │   ├── BudgetExceeded         429: a USD or token budget in scope is spent
    │   └── RateLimited            429: a local rate limit or the wait queue is full
    ├── UpstreamError              one attempt at one deployment failed; `kind` says why
    └── AllTargetsFailed           every target of a route failed; lists each attempt

    ConfigError                    bridge.yaml or an included file is invalid (not a BridgeError:
                                   it never reaches a client)

Adapters translate every SDK and transport exception into an UpstreamError at the edge, with the
original chained (`raise ... from exc`). The router acts only on `UpstreamError.kind.action`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sage_bridge.secrets import redact


class Action(enum.Enum):
    """The router's next step after an attempt failed with a given kind of error."""

    RETRY = "retry"  # try the same deployment again after a backoff
    FALLBACK = "fallback"  # move on to the next target at once
    FINAL = "final"  # the request itself is at fault: answer the client at once


class ErrorKind(enum.Enum):
    RATE_LIMITED = ("rate_limited", Action.RETRY)
    OVERLOADED = ("overloaded", Action.RETRY)
    TIMEOUT = ("timeout", Action.RETRY)
    CONNECTION = ("connection", Action.RETRY)
    SERVER_ERROR = ("server_error", Action.RETRY)
    AUTH = ("auth", Action.FALLBACK)
    PERMISSION = ("permission", Action.FALLBACK)
    NOT_FOUND = ("not_found", Action.FALLBACK)
    CONTEXT_LENGTH = ("context_length", Action.FALLBACK)
    CONTENT_POLICY = ("content_policy", Action.FALLBACK)
    INVALID_REQUEST = ("invalid_request", Action.FINAL)

    def __init__(self, label: str, action: Action) -> None:
        self.label = label
        self.action = action


class BridgeError(Exception):
    """Base of every error the bridge returns to a client."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """Return the OpenAI-shaped error body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(BridgeError):
    """The request cannot be served as sent."""

    status = 400
    error_type = "invalid_request_error"


class InvalidRequest(RequestError):
    """Raised for malformed JSON, missing fields or values of the wrong type."""


class UnsupportedParameter(InvalidRequest):
    """Raised by an adapter whose deployment rejects a parameter it cannot honour.

    The router treats it as "this target cannot serve the request" and tries the next one; the
    client sees it only when no target could serve the request as sent.
    """


class ContextLengthExceeded(RequestError):
    """Raised when the prompt and the requested output do not fit the context window."""

    code = "context_length_exceeded"


class Forbidden(RequestError):
    """Raised when the caller's identity is not allowed to use the bridge or an endpoint."""

    status = 403
    error_type = "permission_error"
    code = "forbidden"


class ModelNotFound(RequestError):
    """Raised when the request names a model that is neither a route nor a deployment."""

    status = 404
    code = "model_not_found"


class PayloadTooLarge(RequestError):
    """Raised when the request body exceeds the configured size cap."""

    status = 413
    code = "payload_too_large"


class _RetryLater(RequestError):
    status = 429

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_after_header(self.retry_after)


def retry_after_header(seconds: float) -> dict[str, str]:
    """Return a Retry-After header for `seconds`."""
    # Retry-After takes whole seconds; round up so a client never comes back too early.
    return {"Retry-After": str(max(1, int(-(-seconds // 1))))}


class BudgetExceeded(_RetryLater):
    """Raised when a budget in scope cannot cover the request's worst-case cost."""

    error_type = "insufficient_quota"
    code = "budget_exceeded"


class RateLimited(_RetryLater):
    """Raised when a local rate limit refuses the request and no target has capacity."""

    error_type = "rate_limit_error"
    code = "rate_limited"


@dataclass(frozen=True, slots=True)
class UpstreamDetail:
    """What the provider said, kept for logs and for the client's error body."""

    provider: str
    status: int | None = None
    provider_error_type: str | None = None
    retry_after: float | None = None  # seconds, parsed from retry-after-ms or retry-after


class UpstreamError(BridgeError):
    """One attempt at one deployment failed."""

    status = 502
    error_type = "upstream_error"

    def __init__(self, kind: ErrorKind, message: str, detail: UpstreamDetail) -> None:
        super().__init__(message, code=kind.label)
        self.kind = kind
        self.detail = detail
        if kind is ErrorKind.CONTEXT_LENGTH:
            self.status, self.error_type, self.code = 400, "invalid_request_error", "context_length_exceeded"
        elif kind is ErrorKind.INVALID_REQUEST:
            self.status, self.error_type = 400, "invalid_request_error"

    @property
    def retry_after(self) -> float | None:
        return self.detail.retry_after


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt, as listed in an AllTargetsFailed body."""

    deployment: str
    kind: str
    message: str
    retry_after: float | None = None  # seconds from the upstream's Retry-After header, if it sent one


class AllTargetsFailed(BridgeError):
    """Raised when no target of a route could answer; the body lists every attempt."""

    status = 502
    error_type = "upstream_error"
    code = "all_targets_failed"
    _outcome = "failed"  # what the message says happened to every target

    def __init__(self, route: str, attempts: list[Attempt], advice: str = "") -> None:
        summary = "; ".join(f"{a.deployment}: {a.kind}" for a in attempts) or "no target was available"
        super().__init__(f'every target of route "{route}" {self._outcome} ({summary}){advice}')
        self.attempts = attempts

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["attempts"] = [
            {"deployment": a.deployment, "kind": a.kind, "message": redact(a.message)} for a in self.attempts
        ]
        return body


class AllTargetsRateLimited(AllTargetsFailed):
    """Raised when every target that was called rejected the request with a rate limit.

    The client gets 429 with the shortest Retry-After an upstream sent, as from OpenAI itself,
    so that its client library backs off instead of treating the failure as a server error.
    """

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    _outcome = "is rate limited upstream"

    def __init__(self, route: str, attempts: list[Attempt], retry_after: float | None) -> None:
        super().__init__(route, attempts, f"; retry in {retry_after:.0f} s" if retry_after is not None else "")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_after_header(self.retry_after) if self.retry_after is not None else {}


class ConfigError(Exception):
    """bridge.yaml or a file it includes is invalid. Each problem names file, line and key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
