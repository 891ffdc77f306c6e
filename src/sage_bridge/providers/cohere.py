"""The adapter for Cohere's v2 Chat and Embed APIs, through the official SDK.

Translation lives in translate_cohere. This module owns the SDK client (on a pooled
httpx.AsyncClient), the calls and the embedding batches. It also maps the SDK's exceptions onto
UpstreamError, including the raw httpx exceptions that the Cohere SDK lets through.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError
from cohere.core.parse_error import ParsingError

from sage_bridge.config.schema import CohereProviderConfig, DeploymentConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.providers.adapter_common import configured_key, missing_key_reason, root_url
from sage_bridge.providers.base import Provider
from sage_bridge.providers.errors_map import (
    Failure,
    body_text,
    classify_by_rules,
    kind_for_status,
    parse_retry_after,
    simple_rule,
    to_upstream_error,
)
from sage_bridge.providers.translate_cohere import (
    StreamTranslator,
    build_request,
    embed_arguments,
    embed_batches,
    embed_texts,
    parse_response,
)
from sage_bridge.types import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamEvent, Usage

logger = logging.getLogger(__name__)

SDK_ERRORS: tuple[type[BaseException], ...] = (ApiError, ParsingError, httpx.HTTPError)


class CohereProvider(Provider):
    """One Cohere account, with one pooled SDK client."""

    type_name = "cohere"

    def __init__(self, name: str, config: CohereProviderConfig) -> None:
        super().__init__(name, config)
        self._http: httpx.AsyncClient | None = None
        self._client: cohere.AsyncClientV2 | None = None
        key = configured_key(config.api_key)
        if key is not None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout))
            self._client = cohere.AsyncClientV2(
                api_key=key,
                base_url=root_url(name, config.base_url, "Cohere", ("/v1", "/v2")),
                max_retries=0,
                httpx_client=self._http,
                log_warning_experimental_features=False,
            )

    def disabled_reason(self) -> str | None:
        return None if self._client is not None else missing_key_reason(self.name)

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        arguments = build_request(request, deployment, self.name)
        try:
            response = await self._sdk().chat(**arguments)
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc
        return parse_response(self.name, response.model_dump(), arguments["model"])

    async def stream_chat(
        self, request: ChatRequest, deployment: DeploymentConfig
    ) -> AsyncIterator[StreamEvent]:
        arguments = build_request(request, deployment, self.name)
        translator = StreamTranslator(self.name, request)
        # Declared as AsyncIterator, but an async generator: closing it releases the connection
        # when the consumer stops early.
        events = cast(AsyncGenerator[Any, None], self._sdk().chat_stream(**arguments))
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    for translated in translator.feed(event.model_dump()):
                        yield translated
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc

        for translated in translator.finish():
            yield translated

    async def embed(self, request: EmbeddingRequest, deployment: DeploymentConfig) -> EmbeddingResult:
        texts = embed_texts(request)
        arguments = embed_arguments(request, deployment, self.name)
        vectors: list[list[float]] = []
        billed = 0
        raw: list[dict[str, Any]] = []

        for batch in embed_batches(texts):
            try:
                response = await self._sdk().embed(texts=batch, **arguments)
            except SDK_ERRORS as exc:
                raise to_upstream_error(self.name, exc, classify_error) from exc
            vectors.extend(response.embeddings.float_ or [])
            meta = response.meta.model_dump(exclude_none=True) if response.meta is not None else {}
            billed += int((meta.get("billed_units") or {}).get("input_tokens") or 0)
            raw.append(meta)

        if len(vectors) != len(texts):
            failure = Failure(ErrorKind.SERVER_ERROR, f"{len(texts)} texts were sent but {len(vectors)} vectors came back")
            raise failure.to_error(self.name)
        usage = Usage(prompt_tokens=billed, raw={"batches": raw})
        return EmbeddingResult(vectors=vectors, usage=usage, upstream_model=arguments["model"])

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _sdk(self) -> cohere.AsyncClientV2:
        if self._client is None:
            raise Failure(ErrorKind.AUTH, missing_key_reason(self.name)).to_error(self.name)
        return self._client


# -- error classification ---------------------------------------------------------------------

_CONTEXT_MESSAGES = ("too many tokens", "too long for the model")


def _status_failure(exc: ApiError) -> Failure:
    text = body_text(exc.body) or (str(exc.body) if exc.body is not None else "")
    if exc.status_code is None:
        return Failure(ErrorKind.SERVER_ERROR, text or "the API call failed")
    kind = kind_for_status(exc.status_code)
    if kind is ErrorKind.INVALID_REQUEST and any(marker in text.lower() for marker in _CONTEXT_MESSAGES):
        kind = ErrorKind.CONTEXT_LENGTH
    return Failure(kind, text, status=exc.status_code, retry_after=parse_retry_after(exc.headers))


# Checked in order, so a subclass comes before its base class.
_RULES: tuple[tuple[type[BaseException], Callable[[Any], Failure]], ...] = (
    (ApiError, _status_failure),
    (ParsingError, simple_rule(ErrorKind.SERVER_ERROR, "the response did not match the API schema")),
    (SSEError, simple_rule(ErrorKind.SERVER_ERROR, "the response was not a valid event stream")),
    (httpx.TimeoutException, simple_rule(ErrorKind.TIMEOUT, "the request timed out")),
    (httpx.TransportError, simple_rule(ErrorKind.CONNECTION, "the connection failed")),
    (httpx.HTTPError, simple_rule(ErrorKind.SERVER_ERROR, "the response could not be read")),
)

# The error class of the SDK's Bedrock and SageMaker helpers, which this adapter does not use.
# It is matched by name so that the adapter does not import the AWS helper modules.
_PRIVATE_RULES: dict[str, Callable[[Any], Failure]] = {
    "CohereError": simple_rule(ErrorKind.SERVER_ERROR, "the Cohere helper failed"),
}


def classify_error(exc: BaseException) -> Failure | None:
    """Classify a cohere SDK or httpx exception; None means no rule covers its class."""
    return classify_by_rules(exc, _RULES, _PRIVATE_RULES)
