"""Mapping of every SDK and transport exception onto UpstreamError, Retry-After parsing and
key redaction, checked against the mock upstreams through the real SDKs (and aiohttp, which
carries the OpenAI adapter's chat requests)."""

from __future__ import annotations

import email.utils
import importlib
import pkgutil
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from types import ModuleType
from typing import Any

import aiohttp
import aiohttp.client_exceptions
import anthropic
import cohere
import cohere.errors
import httpx
import httpx2
import openai
import pytest
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError
from cohere.core.parse_error import ParsingError
from pydantic import SecretStr

from sage_bridge.config.schema import (
    AnthropicProviderConfig,
    CohereProviderConfig,
    DeploymentConfig,
    OpenAIProviderConfig,
)
from sage_bridge.errors import ErrorKind, UpstreamError
from sage_bridge.providers import anthropic as anthropic_adapter
from sage_bridge.providers import cohere as cohere_adapter
from sage_bridge.providers import openai as openai_adapter
from sage_bridge.providers import openai_sdk
from sage_bridge.providers.base import Provider
from sage_bridge.providers.errors_map import Failure, kind_for_status, parse_retry_after, to_upstream_error
from sage_bridge.providers.openai_errors import classify_http_error
from sage_bridge.providers.openai_http import OpenAIResponseError, OpenAIStatusError, OpenAIStreamError
from sage_bridge.secrets import MASK, register_secret
from sage_bridge.types import ChatRequest, EmbeddingRequest
from tests.mocks import anthropic_upstream, cohere_upstream, openai_upstream  # noqa: F401  (fixtures)
from tests.mocks.anthropic_mock import AnthropicMock, anthropic_error
from tests.mocks.anthropic_mock import event as anthropic_event
from tests.mocks.anthropic_mock import stream_error_event as anthropic_stream_error
from tests.mocks.base import SSE, MockUpstream, Reply, Scripted
from tests.mocks.cohere_mock import CohereMock, cohere_error, stream_error_end
from tests.mocks.cohere_mock import event as cohere_event
from tests.mocks.openai_mock import OpenAIMock, openai_error
from tests.mocks.openai_mock import stream_error_event as openai_stream_error

REQUEST = ChatRequest.model_validate({"model": "default", "messages": [{"role": "user", "content": "hello"}]})


# -- every exception class has a rule ---------------------------------------------------------


def subclasses(base: type[BaseException]) -> set[type[BaseException]]:
    found = {base}
    for child in base.__subclasses__():
        found |= subclasses(child)
    return found


def exported_exceptions(module: ModuleType) -> set[type[BaseException]]:
    # type(value) rather than inspect.isclass: the latter reads __class__, which makes the
    # openai module's lazy resource proxies import every resource.
    return {
        value
        for value in vars(module).copy().values()
        if issubclass(type(value), type)
        and issubclass(value, BaseException)
        and value.__module__.startswith(module.__name__)
    }


def import_submodules(package_name: str) -> None:
    """Import every module of an SDK package, so that __subclasses__ finds every error class.

    Modules whose optional dependencies are not installed are skipped: the SDK cannot raise
    their errors here either.
    """
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
        try:
            importlib.import_module(info.name)
        except ImportError:
            continue


def load_cohere_errors() -> None:
    # cohere.errors imports its classes lazily, so each one is loaded for __subclasses__ to find.
    for name in cohere.errors.__all__:
        getattr(cohere.errors, name)
    importlib.import_module("cohere.manually_maintained.cohere_aws.error")


def status_of(cls: type[BaseException], default: int = 500) -> int:
    value = getattr(cls, "status_code", None)
    return value if isinstance(value, int) else default


def bare_instance(cls: type[BaseException]) -> BaseException:
    """Build an exception without its own constructor (each class has another signature)."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, "boom")
    return exc


def openai_instance(cls: type[BaseException]) -> BaseException:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    if cls is openai.OAuthError:
        return cls(response=httpx2.Response(401, request=request), body={})
    if issubclass(cls, openai.APIStatusError):
        response = httpx2.Response(status_of(cls), request=request)
        return cls("boom", response=response, body={"message": "boom", "type": "x"})
    if issubclass(cls, openai.APIResponseValidationError):
        return cls(response=httpx2.Response(200, request=request), body=None)
    if cls is openai.APIError:
        return cls("boom", request, body={"message": "boom", "type": "server_error"})
    return bare_instance(cls)


def anthropic_instance(cls: type[BaseException]) -> BaseException:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    if issubclass(cls, anthropic.APIStatusError):
        response = httpx2.Response(status_of(cls), request=request)
        return cls("boom", response=response, body={"type": "error", "error": {"type": "api_error", "message": "boom"}})
    if issubclass(cls, anthropic.APIResponseValidationError):
        return cls(response=httpx2.Response(200, request=request), body=None)
    return bare_instance(cls)


def cohere_instance(cls: type[BaseException]) -> BaseException:
    if cls is ApiError:
        return ApiError(status_code=500, body={"message": "boom"})
    if issubclass(cls, ApiError):
        return cls(body={"message": "boom"}, headers={})
    return bare_instance(cls)


def openai_classes() -> set[type[BaseException]]:
    for package in ("openai.lib", "openai._extras", "openai.auth"):
        import_submodules(package)
    return subclasses(openai.OpenAIError) | exported_exceptions(openai) | subclasses(httpx2.HTTPError)


def anthropic_classes() -> set[type[BaseException]]:
    import_submodules("anthropic.lib")
    return subclasses(anthropic.AnthropicError) | exported_exceptions(anthropic) | subclasses(httpx2.HTTPError)


def cohere_classes() -> set[type[BaseException]]:
    load_cohere_errors()
    aws_error = importlib.import_module("cohere.manually_maintained.cohere_aws.error").CohereError
    return (
        subclasses(ApiError)
        | subclasses(ParsingError)
        | subclasses(aws_error)
        | exported_exceptions(cohere)
        | subclasses(httpx.HTTPError)
    )


SDKS: list[tuple[str, Callable[[], set[type[BaseException]]], Callable[..., BaseException], Any]] = [
    ("openai", openai_classes, openai_instance, openai_sdk.classify_error),
    ("anthropic", anthropic_classes, anthropic_instance, anthropic_adapter.classify_error),
    ("cohere", cohere_classes, cohere_instance, cohere_adapter.classify_error),
]


@pytest.mark.parametrize(("sdk", "classes", "build", "classify"), SDKS, ids=[sdk[0] for sdk in SDKS])
def test_every_exception_class_is_mapped(
    sdk: str,
    classes: Callable[[], set[type[BaseException]]],
    build: Callable[[type[BaseException]], BaseException],
    classify: Callable[[BaseException], Failure | None],
) -> None:
    unmapped = sorted(cls.__qualname__ for cls in classes() if classify(build(cls)) is None)

    assert unmapped == []


@pytest.mark.parametrize(("sdk", "classes", "build", "classify"), SDKS, ids=[sdk[0] for sdk in SDKS])
def test_enumeration_finds_the_sdk_classes(
    sdk: str,
    classes: Callable[[], set[type[BaseException]]],
    build: Callable[[type[BaseException]], BaseException],
    classify: Callable[[BaseException], Failure | None],
) -> None:
    # Guards the test above against an enumeration that silently finds nothing.
    assert len(classes()) >= 12


def aiohttp_classes() -> set[type[BaseException]]:
    return (
        subclasses(aiohttp.ClientError)
        | exported_exceptions(aiohttp.client_exceptions)
        | {TimeoutError, OpenAIStatusError, OpenAIStreamError, OpenAIResponseError}
    )


def aiohttp_instance(cls: type[BaseException]) -> BaseException:
    if cls is OpenAIStatusError:
        return OpenAIStatusError(500, {"error": {"message": "boom", "type": "server_error"}}, {})
    if cls is OpenAIStreamError:
        return OpenAIStreamError({"message": "boom", "type": "server_error"})
    return bare_instance(cls)


def test_every_aiohttp_exception_class_is_mapped() -> None:
    unmapped = sorted(cls.__qualname__ for cls in aiohttp_classes() if classify_http_error(aiohttp_instance(cls)) is None)

    assert unmapped == []


def test_aiohttp_enumeration_finds_the_classes() -> None:
    classes = aiohttp_classes()

    assert len(classes) >= 25
    assert aiohttp.ServerDisconnectedError in classes
    assert aiohttp.ClientPayloadError in classes


def test_new_aiohttp_class_is_unmapped() -> None:
    # A class aiohttp may add later must fail the completeness test above, not pass silently.
    class FutureClientError(aiohttp.ClientError):
        pass

    assert classify_http_error(bare_instance(FutureClientError)) is None


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (aiohttp.ConnectionTimeoutError, ErrorKind.TIMEOUT),
        (aiohttp.SocketTimeoutError, ErrorKind.TIMEOUT),
        (aiohttp.ServerTimeoutError, ErrorKind.TIMEOUT),
        (TimeoutError, ErrorKind.TIMEOUT),
        (aiohttp.ClientConnectorError, ErrorKind.CONNECTION),
        (aiohttp.ClientConnectorDNSError, ErrorKind.CONNECTION),
        (aiohttp.ClientConnectorCertificateError, ErrorKind.CONNECTION),
        (aiohttp.ServerDisconnectedError, ErrorKind.CONNECTION),
        (aiohttp.ClientConnectionResetError, ErrorKind.CONNECTION),
        (aiohttp.ClientOSError, ErrorKind.CONNECTION),
        (aiohttp.ClientPayloadError, ErrorKind.CONNECTION),
        (aiohttp.ContentTypeError, ErrorKind.SERVER_ERROR),
        (aiohttp.InvalidUrlClientError, ErrorKind.NOT_FOUND),
        (aiohttp.InvalidUrlRedirectClientError, ErrorKind.SERVER_ERROR),
        (OpenAIResponseError, ErrorKind.SERVER_ERROR),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_aiohttp_class_kinds(cls: type[BaseException], expected: ErrorKind) -> None:
    failure = classify_http_error(bare_instance(cls))

    assert failure is not None
    assert failure.kind is expected


def test_proxy_status_error_uses_its_status() -> None:
    exc = aiohttp.ClientHttpProxyError(None, (), status=429, message="Too Many Requests", headers={"retry-after": "4"})  # type: ignore[arg-type]

    failure = classify_http_error(exc)

    assert failure is not None
    assert failure.kind is ErrorKind.RATE_LIMITED
    assert failure.status == 429
    assert failure.retry_after == 4.0


@pytest.mark.parametrize(
    ("exc", "classify", "expected"),
    [
        (openai_instance(openai.RateLimitError), openai_sdk.classify_error, ErrorKind.RATE_LIMITED),
        (openai_instance(openai.APITimeoutError), openai_sdk.classify_error, ErrorKind.TIMEOUT),
        (openai_instance(openai.APIConnectionError), openai_sdk.classify_error, ErrorKind.CONNECTION),
        (openai_instance(openai.AuthenticationError), openai_sdk.classify_error, ErrorKind.AUTH),
        (openai_instance(openai.ConflictError), openai_sdk.classify_error, ErrorKind.SERVER_ERROR),
        (anthropic_instance(anthropic.OverloadedError), anthropic_adapter.classify_error, ErrorKind.OVERLOADED),
        (anthropic_instance(anthropic.RequestTimeoutError), anthropic_adapter.classify_error, ErrorKind.TIMEOUT),
        (anthropic_instance(anthropic.NotFoundError), anthropic_adapter.classify_error, ErrorKind.NOT_FOUND),
        (anthropic_instance(anthropic.CredentialsError), anthropic_adapter.classify_error, ErrorKind.AUTH),
        (cohere_instance(cohere.errors.ServiceUnavailableError), cohere_adapter.classify_error, ErrorKind.OVERLOADED),
        (cohere_instance(cohere.errors.TooManyRequestsError), cohere_adapter.classify_error, ErrorKind.RATE_LIMITED),
        (cohere_instance(cohere.errors.InvalidTokenError), cohere_adapter.classify_error, ErrorKind.AUTH),
        (cohere_instance(cohere.errors.GatewayTimeoutError), cohere_adapter.classify_error, ErrorKind.TIMEOUT),
        (bare_instance(httpx.ReadTimeout), cohere_adapter.classify_error, ErrorKind.TIMEOUT),
        (bare_instance(httpx.RemoteProtocolError), cohere_adapter.classify_error, ErrorKind.CONNECTION),
        (bare_instance(SSEError), cohere_adapter.classify_error, ErrorKind.SERVER_ERROR),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_class_kinds(exc: BaseException, classify: Callable[[BaseException], Failure | None], expected: ErrorKind) -> None:
    failure = classify(exc)

    assert failure is not None
    assert failure.kind is expected


def test_unknown_class_is_retryable_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        error = to_upstream_error("openai", RuntimeError("strange"), lambda exc: None)

    assert error.kind is ErrorKind.SERVER_ERROR
    assert "RuntimeError" in caplog.text


# -- status codes and Retry-After ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ErrorKind.INVALID_REQUEST),
        (401, ErrorKind.AUTH),
        (403, ErrorKind.PERMISSION),
        (404, ErrorKind.NOT_FOUND),
        (408, ErrorKind.TIMEOUT),
        (409, ErrorKind.SERVER_ERROR),
        (413, ErrorKind.INVALID_REQUEST),
        (422, ErrorKind.INVALID_REQUEST),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.SERVER_ERROR),
        (502, ErrorKind.SERVER_ERROR),
        (503, ErrorKind.OVERLOADED),
        (504, ErrorKind.TIMEOUT),
        (529, ErrorKind.OVERLOADED),
    ],
)
def test_kind_for_status(status: int, expected: ErrorKind) -> None:
    assert kind_for_status(status) is expected


def test_retryable_statuses_retry() -> None:
    assert all(kind_for_status(status).action.value == "retry" for status in (408, 409, 429, 500, 503, 529))


NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "tomorrow-ish"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=lambda: NOW) == expected


# -- HTTP errors through the adapters -----------------------------------------------------------


def openai_provider(mock: MockUpstream, **config: Any) -> Provider:
    settings = {"type": "openai", "api_key": SecretStr(mock.api_key), "base_url": mock.base_url, **config}
    return openai_adapter.OpenAIProvider("openai", OpenAIProviderConfig(**settings))


def anthropic_provider(mock: MockUpstream, **config: Any) -> Provider:
    settings = {"type": "anthropic", "api_key": SecretStr(mock.api_key), "base_url": mock.base_url, **config}
    return anthropic_adapter.AnthropicProvider("anthropic", AnthropicProviderConfig(**settings))


def cohere_provider(mock: MockUpstream, **config: Any) -> Provider:
    settings = {"type": "cohere", "api_key": SecretStr(mock.api_key), "base_url": mock.base_url, **config}
    return cohere_adapter.CohereProvider("cohere", CohereProviderConfig(**settings))


def deployment(provider: Provider) -> DeploymentConfig:
    return DeploymentConfig(provider=provider.name, model="mock-model")


async def chat_error(provider: Provider) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        await provider.chat(REQUEST, deployment(provider))
    await provider.aclose()
    return caught.value


async def stream_error(provider: Provider) -> tuple[UpstreamError, list[str]]:
    contents: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for item in provider.stream_chat(REQUEST, deployment(provider)):
            if item.rate_limits is None:
                contents.append(item.content or "")
    await provider.aclose()
    return caught.value, contents


OPENAI_CASES = [
    (openai_error(429, "Rate limit reached", error_type="requests", code="rate_limit_exceeded", headers={"retry-after-ms": "1200"}), ErrorKind.RATE_LIMITED, 1.2),
    (openai_error(429, "You exceeded your current quota", error_type="insufficient_quota", code="insufficient_quota"), ErrorKind.PERMISSION, None),
    (openai_error(400, "This model's maximum context length is 8192 tokens.", code="context_length_exceeded", param="messages"), ErrorKind.CONTEXT_LENGTH, None),
    (openai_error(400, "Invalid prompt: flagged", code="invalid_prompt"), ErrorKind.CONTENT_POLICY, None),
    (openai_error(400, "Unrecognized request argument"), ErrorKind.INVALID_REQUEST, None),
    (openai_error(401, "Incorrect API key provided", code="invalid_api_key"), ErrorKind.AUTH, None),
    (openai_error(403, "Country not supported", error_type="permission_error"), ErrorKind.PERMISSION, None),
    (openai_error(404, "The model does not exist", code="model_not_found"), ErrorKind.NOT_FOUND, None),
    (openai_error(408, "Request timed out"), ErrorKind.TIMEOUT, None),
    (openai_error(409, "Conflict"), ErrorKind.SERVER_ERROR, None),
    (openai_error(500, "The server had an error", error_type="server_error", headers={"retry-after": "2"}), ErrorKind.SERVER_ERROR, 2.0),
    (openai_error(503, "The engine is currently overloaded", error_type="server_error"), ErrorKind.OVERLOADED, None),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("response", "kind", "retry_after"), OPENAI_CASES)
async def test_openai_status_errors(
    openai_upstream: OpenAIMock, response: Scripted, kind: ErrorKind, retry_after: float | None, streamed: bool
) -> None:
    openai_upstream.enqueue(response)
    provider = openai_provider(openai_upstream)

    if streamed:
        error, _ = await stream_error(provider)
    else:
        error = await chat_error(provider)

    assert error.kind is kind
    assert error.detail.provider == "openai"
    assert error.detail.status == response.status
    assert error.detail.provider_error_type == (response.body["error"]["type"] or response.body["error"]["code"])
    assert error.retry_after == retry_after
    assert isinstance(error.__cause__, OpenAIStatusError)
    assert response.body["error"]["message"][:20] in error.message


@pytest.mark.parametrize(("response", "kind", "retry_after"), OPENAI_CASES)
async def test_openai_embedding_status_errors(
    openai_upstream: OpenAIMock, response: Scripted, kind: ErrorKind, retry_after: float | None
) -> None:
    # Embeddings still go through the SDK, whose status errors map through the same function.
    openai_upstream.enqueue(response)
    provider = openai_provider(openai_upstream)

    with pytest.raises(UpstreamError) as caught:
        await provider.embed(EmbeddingRequest(model="embed", input="hello"), deployment(provider))
    await provider.aclose()

    assert caught.value.kind is kind
    assert caught.value.detail.status == response.status
    assert caught.value.retry_after == retry_after
    assert isinstance(caught.value.__cause__, openai.APIStatusError)


async def test_openai_non_json_error_page(openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(Scripted(status=502, body="<html><body>Bad Gateway</body></html>"))

    error = await chat_error(openai_provider(openai_upstream))

    assert error.kind is ErrorKind.SERVER_ERROR
    assert error.detail.status == 502
    assert "Bad Gateway" in error.message


@pytest.mark.parametrize(
    "body",
    [
        "this is not JSON",
        ["a", "list"],
        {"id": "x", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [{"type": "function"}]}}]},
    ],
    ids=["not-json", "not-an-object", "tool-call-without-function"],
)
async def test_openai_malformed_response(openai_upstream: OpenAIMock, body: Any) -> None:
    openai_upstream.enqueue(Scripted(body=body))

    error = await chat_error(openai_provider(openai_upstream))

    assert error.kind is ErrorKind.SERVER_ERROR
    assert "did not match the API schema" in error.message


async def test_openai_malformed_stream_chunk(openai_upstream: OpenAIMock) -> None:
    openai_upstream.enqueue(Scripted(events=[openai_chunk("Hel"), SSE("{not json")]))

    error, contents = await stream_error(openai_provider(openai_upstream))

    assert contents == ["Hel"]
    assert error.kind is ErrorKind.SERVER_ERROR
    assert "not valid JSON" in error.message


ANTHROPIC_CASES = [
    (anthropic_error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", headers={"retry-after": "5"}), ErrorKind.RATE_LIMITED, "rate_limit_error", 5.0),
    (anthropic_error(529, "overloaded_error", "Overloaded"), ErrorKind.OVERLOADED, "overloaded_error", None),
    (anthropic_error(400, "invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"), ErrorKind.CONTEXT_LENGTH, "invalid_request_error", None),
    (anthropic_error(400, "invalid_request_error", "messages: field required"), ErrorKind.INVALID_REQUEST, "invalid_request_error", None),
    (anthropic_error(401, "authentication_error", "invalid x-api-key"), ErrorKind.AUTH, "authentication_error", None),
    (anthropic_error(403, "permission_error", "not allowed"), ErrorKind.PERMISSION, "permission_error", None),
    (anthropic_error(404, "not_found_error", "model: claude-nope"), ErrorKind.NOT_FOUND, "not_found_error", None),
    (anthropic_error(413, "request_too_large", "Request exceeds the maximum size"), ErrorKind.INVALID_REQUEST, "request_too_large", None),
    (anthropic_error(500, "api_error", "Internal server error"), ErrorKind.SERVER_ERROR, "api_error", None),
    (anthropic_error(503, "overloaded_error", "Service unavailable"), ErrorKind.OVERLOADED, "overloaded_error", None),
]


@pytest.mark.parametrize(("response", "kind", "error_type", "retry_after"), ANTHROPIC_CASES)
async def test_anthropic_status_errors(
    anthropic_upstream: AnthropicMock, response: Scripted, kind: ErrorKind, error_type: str, retry_after: float | None
) -> None:
    anthropic_upstream.enqueue(response)

    error = await chat_error(anthropic_provider(anthropic_upstream))

    assert error.kind is kind
    assert error.detail.status == response.status
    assert error.detail.provider_error_type == error_type
    assert error.retry_after == retry_after
    assert isinstance(error.__cause__, anthropic.APIStatusError)


COHERE_CASES = [
    (cohere_error(429, "You are using a Trial key, which is limited", headers={"retry-after": "3"}), ErrorKind.RATE_LIMITED, 3.0),
    (cohere_error(400, "too many tokens: size limit exceeded by 1203 tokens"), ErrorKind.CONTEXT_LENGTH, None),
    (cohere_error(400, "invalid request: message must be at least 1 token long"), ErrorKind.INVALID_REQUEST, None),
    (cohere_error(401, "invalid api token"), ErrorKind.AUTH, None),
    (cohere_error(498, "invalid token"), ErrorKind.AUTH, None),
    (cohere_error(404, "model 'nope' not found"), ErrorKind.NOT_FOUND, None),
    (cohere_error(500, "internal server error"), ErrorKind.SERVER_ERROR, None),
    (cohere_error(503, "service unavailable"), ErrorKind.OVERLOADED, None),
    (cohere_error(504, "gateway timeout"), ErrorKind.TIMEOUT, None),
    (cohere_error(409, "conflict"), ErrorKind.SERVER_ERROR, None),
]


@pytest.mark.parametrize(("response", "kind", "retry_after"), COHERE_CASES)
async def test_cohere_status_errors(
    cohere_upstream: CohereMock, response: Scripted, kind: ErrorKind, retry_after: float | None
) -> None:
    cohere_upstream.enqueue(response)

    error = await chat_error(cohere_provider(cohere_upstream))

    assert error.kind is kind
    assert error.detail.status == response.status
    assert error.retry_after == retry_after
    assert isinstance(error.__cause__, ApiError)


PROVIDERS: list[tuple[str, Callable[..., Provider], type[MockUpstream]]] = [
    ("openai", openai_provider, OpenAIMock),
    ("anthropic", anthropic_provider, AnthropicMock),
    ("cohere", cohere_provider, CohereMock),
]


@pytest.fixture(params=PROVIDERS, ids=[entry[0] for entry in PROVIDERS])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MockUpstream, Callable[..., Provider]]]:
    _, factory, mock_class = request.param
    async with mock_class() as mock:
        yield mock, factory


async def test_sdk_does_not_retry(upstream: tuple[MockUpstream, Callable[..., Provider]]) -> None:
    mock, factory = upstream
    mock.enqueue(Scripted(status=500, body={"message": "boom", "error": {"type": "api_error", "message": "boom"}}))

    await chat_error(factory(mock))

    assert mock.calls == 1


async def test_read_timeout(upstream: tuple[MockUpstream, Callable[..., Provider]]) -> None:
    mock, factory = upstream
    mock.enqueue(Reply(delay=2.0))

    error = await chat_error(factory(mock, read_timeout=0.2))

    assert error.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize(("name", "factory", "mock_class"), PROVIDERS, ids=[entry[0] for entry in PROVIDERS])
async def test_connection_refused(name: str, factory: Callable[..., Provider], mock_class: type[MockUpstream]) -> None:
    mock = await mock_class().start()
    await mock.stop()  # nothing listens on this port any more

    error = await chat_error(factory(mock))

    assert error.kind is ErrorKind.CONNECTION
    assert error.detail.provider == name


async def test_cut_stream_is_a_connection_error(upstream: tuple[MockUpstream, Callable[..., Provider]]) -> None:
    mock, factory = upstream
    mock.enqueue(Reply(text="a fairly long answer that is cut", chunk_size=3, cut_after=4))

    error, _ = await stream_error(factory(mock))

    assert error.kind is ErrorKind.CONNECTION


# -- errors inside a stream ---------------------------------------------------------------------


def openai_chunk(content: str) -> SSE:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return SSE({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]})


async def test_openai_error_chunk_mid_stream(openai_upstream: OpenAIMock) -> None:
    events = [openai_chunk("Hel"), openai_stream_error("The server had an error while processing", "server_error")]
    openai_upstream.enqueue(Scripted(events=events))

    error, contents = await stream_error(openai_provider(openai_upstream))

    assert contents == ["Hel"]
    assert error.kind is ErrorKind.SERVER_ERROR
    assert "The server had an error" in error.message


async def test_anthropic_error_event_mid_stream(anthropic_upstream: AnthropicMock) -> None:
    start: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    events = [
        anthropic_event({"type": "message_start", "message": start}),
        anthropic_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        anthropic_stream_error("overloaded_error", "Overloaded"),
    ]
    anthropic_upstream.enqueue(Scripted(events=events))

    error, contents = await stream_error(anthropic_provider(anthropic_upstream))

    assert contents == ["Hel"]
    assert error.kind is ErrorKind.OVERLOADED
    assert error.detail.provider_error_type == "overloaded_error"
    assert error.detail.status is None


async def test_cohere_error_end_mid_stream(cohere_upstream: CohereMock) -> None:
    delta = cohere_event({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}})
    cohere_upstream.enqueue(Scripted(events=[delta, stream_error_end("generation failed")]))

    error, contents = await stream_error(cohere_provider(cohere_upstream))

    assert contents == ["Hel"]
    assert error.kind is ErrorKind.SERVER_ERROR
    assert "generation failed" in error.message


# -- keys never leak ----------------------------------------------------------------------------

CANARY = "sk-canary-7f3a9c1e5b2d4680"


def echoing_error(provider: str) -> Scripted:
    message = f"Incorrect API key provided: {CANARY}"
    if provider == "openai":
        return openai_error(401, message, code="invalid_api_key")
    if provider == "anthropic":
        return anthropic_error(401, "authentication_error", message)
    return cohere_error(401, message)


def rendered(error: UpstreamError) -> Iterable[str]:
    yield error.message
    yield str(error)
    yield repr(error)
    yield str(error.body())
    cause = error.__cause__
    assert cause is not None
    yield str(cause)
    yield repr(cause)
    yield str(getattr(cause, "body", ""))


@pytest.mark.parametrize(("name", "factory", "mock_class"), PROVIDERS, ids=[entry[0] for entry in PROVIDERS])
async def test_echoed_key_is_redacted(
    name: str, factory: Callable[..., Provider], mock_class: type[MockUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    register_secret(CANARY)
    async with mock_class(api_key=CANARY) as mock:
        mock.enqueue(echoing_error(name))
        with caplog.at_level(logging.DEBUG):
            error = await chat_error(factory(mock))
            logging.getLogger("test").exception("attempt failed", exc_info=error)

    texts = list(rendered(error))
    assert all(CANARY not in text for text in texts)
    assert MASK in error.message
    assert CANARY not in caplog.text
