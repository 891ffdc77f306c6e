"""The adapter for OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp server...).

The unified types already follow Chat Completions, so requests pass through nearly as sent:
parameters the bridge does not model travel in `extra_body`. Streams always ask for a usage
chunk, and usage is estimated locally when a server sends none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from sage_bridge.config.schema import DeploymentConfig, OpenAIProviderConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.providers.adapter_common import (
    configured_key,
    estimate_tokens,
    estimated_usage,
    map_finish_reason,
    missing_key_reason,
    rate_limit_headers,
    reject_several_choices,
    upstream_model,
)
from sage_bridge.providers.base import Provider
from sage_bridge.providers.errors_map import (
    Failure,
    body_error_code,
    body_error_type,
    body_text,
    classify_by_rules,
    kind_for_status,
    parse_retry_after,
    simple_rule as _simple,
    to_upstream_error,
)
from sage_bridge.types import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    FunctionCall,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)

logger = logging.getLogger(__name__)

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "function_call",
}

# Request fields forwarded under their own name; everything else the client sent that the
# unified request does not model goes in `extra_body`.
_FORWARDED_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
)

SDK_ERRORS: tuple[type[BaseException], ...] = (openai.OpenAIError, httpx2.HTTPError)


class OpenAIProvider(Provider):
    """One OpenAI account or OpenAI-compatible server, with one pooled SDK client."""

    type_name = "openai"

    def __init__(self, name: str, config: OpenAIProviderConfig) -> None:
        super().__init__(name, config)
        self._client: openai.AsyncOpenAI | None = None
        key = configured_key(config.api_key)
        if key is not None:
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=config.base_url,
                organization=config.organization,
                project=config.project,
                timeout=httpx2.Timeout(config.read_timeout, connect=config.connect_timeout),
                max_retries=0,
            )

    def disabled_reason(self) -> str | None:
        return None if self._client is not None else missing_key_reason(self.name)

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        arguments = self._chat_arguments(request, deployment, stream=False)
        try:
            raw = await self._sdk().chat.completions.with_raw_response.create(**arguments)
            completion = raw.parse()
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc
        result = self._chat_result(request, completion)
        result.rate_limits = rate_limit_headers(raw.headers)
        return result

    async def stream_chat(self, request: ChatRequest, deployment: DeploymentConfig) -> AsyncIterator[StreamEvent]:
        arguments = self._chat_arguments(request, deployment, stream=True)
        state = _StreamState(self.name, request)
        try:
            raw = await self._sdk().chat.completions.with_raw_response.create(**arguments)
            yield StreamEvent(rate_limits=rate_limit_headers(raw.headers))
            stream = raw.parse()
            async with stream:
                async for chunk in stream:
                    for event in state.feed(chunk):
                        yield event
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc

        for event in state.finish():
            yield event

    async def embed(self, request: EmbeddingRequest, deployment: DeploymentConfig) -> EmbeddingResult:
        arguments: dict[str, Any] = {"model": upstream_model(self.name, deployment), "input": request.input}
        if request.dimensions is not None:
            arguments["dimensions"] = request.dimensions
        if request.user is not None:
            arguments["user"] = request.user
        if request.model_extra:
            arguments["extra_body"] = dict(request.model_extra)

        # encoding_format stays unset, so the SDK requests base64 and decodes it to floats. The
        # server encodes the vectors in whichever format its own client requested.
        try:
            response = await self._sdk().embeddings.create(**arguments)
        except SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_error) from exc

        ordered = sorted(response.data, key=lambda item: item.index)
        if response.usage is not None:
            usage = Usage(prompt_tokens=response.usage.prompt_tokens, raw=response.usage.model_dump(exclude_none=True))
        else:
            # Some compatible servers send no usage; count the input text instead.
            texts = [request.input] if isinstance(request.input, str) else [str(item) for item in request.input]
            usage = Usage(prompt_tokens=sum(estimate_tokens(text) for text in texts), estimated=True)
        return EmbeddingResult(
            vectors=[[float(value) for value in item.embedding] for item in ordered],
            usage=usage,
            upstream_model=response.model,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _sdk(self) -> openai.AsyncOpenAI:
        if self._client is None:
            raise Failure(ErrorKind.AUTH, missing_key_reason(self.name)).to_error(self.name)
        return self._client

    def _chat_arguments(self, request: ChatRequest, deployment: DeploymentConfig, *, stream: bool) -> dict[str, Any]:
        reject_several_choices(request, self.name)
        arguments: dict[str, Any] = {
            "model": upstream_model(self.name, deployment),
            "messages": [message.model_dump(exclude_none=True) for message in request.messages],
        }
        for field in _FORWARDED_FIELDS:
            value = getattr(request, field)
            if value is not None:
                arguments[field] = _plain(value)
        if request.output_limit is None and deployment.max_tokens is not None:
            # NOTE: older OpenAI-compatible servers read only max_tokens and ignore this cap.
            arguments["max_completion_tokens"] = deployment.max_tokens
        if request.extra_params:
            arguments["extra_body"] = request.extra_params

        if stream:
            options = request.stream_options.model_dump() if request.stream_options else {}
            arguments["stream"] = True
            arguments["stream_options"] = {**options, "include_usage": True}
        return arguments

    def _chat_result(self, request: ChatRequest, completion: ChatCompletion) -> ChatResult:
        if not completion.choices:
            raise Failure(ErrorKind.SERVER_ERROR, "the response has no choices").to_error(self.name)
        choice = completion.choices[0]
        message = choice.message
        tool_calls = [
            ToolCall(id=call.id, function=FunctionCall(name=call.function.name, arguments=call.function.arguments))
            for call in message.tool_calls or []
            if call.type == "function"
        ]

        if completion.usage is not None:
            usage = usage_from_openai(completion.usage)
        else:
            outputs = [message.content or "", *(call.function.arguments for call in tool_calls)]
            usage = estimated_usage(request, outputs)
        return ChatResult(
            content=message.content,
            finish_reason=map_finish_reason(self.name, choice.finish_reason, FINISH_REASONS),
            usage=usage,
            tool_calls=tool_calls,
            refusal=message.refusal,
            upstream_model=completion.model,
            upstream_id=completion.id,
        )


class _StreamState:
    """Translates chat.completion.chunk objects and remembers what the final events need."""

    def __init__(self, provider: str, request: ChatRequest) -> None:
        self.provider = provider
        self.request = request
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.outputs: list[str] = []
        self.started_tools: set[int] = set()

    def feed(self, chunk: ChatCompletionChunk) -> list[StreamEvent]:
        if chunk.usage is not None:
            self.usage = usage_from_openai(chunk.usage)
        events: list[StreamEvent] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.delta.content:
                self.outputs.append(choice.delta.content)
                events.append(StreamEvent(content=choice.delta.content))
            for call in choice.delta.tool_calls or []:
                events.append(StreamEvent(tool_call=self._tool_delta(call)))
            if choice.finish_reason is not None:
                self.finish_reason = map_finish_reason(self.provider, choice.finish_reason, FINISH_REASONS)
        return events

    def _tool_delta(self, call: ChoiceDeltaToolCall) -> ToolCallDelta:
        # Some compatible servers repeat id and name on every fragment; pass them on once.
        first = call.index not in self.started_tools
        self.started_tools.add(call.index)
        function = call.function
        arguments = (function.arguments or "") if function is not None else ""
        self.outputs.append(arguments)
        return ToolCallDelta(
            index=call.index,
            arguments=arguments,
            id=call.id if first else None,
            name=function.name if first and function is not None else None,
        )

    def finish(self) -> list[StreamEvent]:
        if self.finish_reason is None:
            raise Failure(
                ErrorKind.CONNECTION, "the stream ended before a finish_reason; the connection was cut"
            ).to_error(self.provider)
        usage = self.usage if self.usage is not None else estimated_usage(self.request, self.outputs)
        return [StreamEvent(finish_reason=self.finish_reason), StreamEvent(usage=usage)]


def usage_from_openai(usage: CompletionUsage) -> Usage:
    """Translate OpenAI usage; its cached tokens are already counted in prompt_tokens."""
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details is not None and details.cached_tokens else 0
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=cached,
        raw=usage.model_dump(exclude_none=True),
    )


def _plain(value: Any) -> Any:
    """Dump pydantic values (tools) to the plain JSON shapes the SDK sends."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    return value


# -- error classification ---------------------------------------------------------------------

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


def _status_failure(exc: openai.APIStatusError) -> Failure:
    text = body_text(exc.body) or exc.message
    code = exc.code or body_error_code(exc.body)
    error_type = exc.type or body_error_type(exc.body)
    return Failure(
        _refine(kind_for_status(exc.status_code), code, error_type, text),
        text,
        status=exc.status_code,
        error_type=error_type or code,
        retry_after=parse_retry_after(exc.response.headers),
    )


def _stream_error_failure(exc: openai.APIError) -> Failure:
    # An error object sent as a data chunk in the middle of a stream; it has no HTTP status.
    text = body_text(exc.body) or exc.message
    code = exc.code or body_error_code(exc.body)
    error_type = exc.type or body_error_type(exc.body)
    kind = _STREAM_ERROR_TYPES.get(error_type or "", ErrorKind.SERVER_ERROR)
    return Failure(_refine(kind, code, error_type, text), f"error in the stream: {text}", error_type=error_type or code)


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
