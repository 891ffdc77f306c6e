"""The adapter for OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp server...).

The unified types already follow Chat Completions, so requests pass through nearly as sent:
parameters the bridge does not model are merged into the request body. Streams always ask for
a usage chunk, and usage is estimated locally when a server sends none. Chat requests go
through openai_http; embeddings use the openai SDK (openai_sdk), imported on first use.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sage_bridge.config.schema import DeploymentConfig, OpenAIProviderConfig
from sage_bridge.errors import ErrorKind, UpstreamError
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
from sage_bridge.providers.errors_map import Failure, exception_text, scrub_exception, to_upstream_error
from sage_bridge.providers.openai_errors import HTTP_ERRORS, classify_http_error
from sage_bridge.providers.openai_http import OpenAIHTTPClient, stream_chunks
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

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIProvider", "classify_http_error", "usage_from_openai"]

logger = logging.getLogger(__name__)

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "function_call",
}

# Request fields forwarded under their own name. Everything else the client sent that the
# unified request does not model is merged into the body by _chat_arguments.
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

# A response whose JSON has the wrong shape (a missing key, a string where a list belongs)
# fails inside the translation with one of these.
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError)


class OpenAIProvider(Provider):
    """One OpenAI account or OpenAI-compatible server.

    Chat requests share one OpenAIHTTPClient, and embeddings one SDK client, created on the
    first embeddings request.
    """

    type_name = "openai"

    def __init__(self, name: str, config: OpenAIProviderConfig) -> None:
        super().__init__(name, config)
        self._config = config
        self._key = configured_key(config.api_key)
        self._client: openai.AsyncOpenAI | None = None
        self._http_client = OpenAIHTTPClient(config, self._key) if self._key is not None else None

    def disabled_reason(self) -> str | None:
        return None if self._key is not None else missing_key_reason(self.name)

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        body = self._chat_arguments(request, deployment, stream=False)
        try:
            completion, headers = await self._http().complete(body)
            result = self._chat_result(request, completion)
        except HTTP_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_http_error) from exc
        except _SHAPE_ERRORS as exc:
            raise self._shape_error(exc) from exc
        result.rate_limits = rate_limit_headers(headers)
        return result

    async def stream_chat(self, request: ChatRequest, deployment: DeploymentConfig) -> AsyncIterator[StreamEvent]:
        body = self._chat_arguments(request, deployment, stream=True)
        state = _StreamState(self.name, request)
        try:
            response = await self._http().open_stream(body)
            try:
                yield StreamEvent(rate_limits=rate_limit_headers(response.headers))
                async for chunk in stream_chunks(response):
                    for event in state.feed(chunk):
                        yield event
            finally:
                # Returns the connection to the pool after a complete stream and closes it
                # after one the client stopped reading.
                response.release()
        except HTTP_ERRORS as exc:
            raise to_upstream_error(self.name, exc, classify_http_error) from exc
        except _SHAPE_ERRORS as exc:
            raise self._shape_error(exc) from exc

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
        await _load_sdk()
        from sage_bridge.providers import openai_sdk

        try:
            response = await self._sdk().embeddings.create(**arguments)
        except openai_sdk.SDK_ERRORS as exc:
            raise to_upstream_error(self.name, exc, openai_sdk.classify_error) from exc

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
        if self._http_client is not None:
            await self._http_client.aclose()
        if self._client is not None:
            await self._client.close()

    def _sdk(self) -> openai.AsyncOpenAI:
        if self._key is None:
            raise Failure(ErrorKind.AUTH, missing_key_reason(self.name)).to_error(self.name)
        if self._client is None:
            from sage_bridge.providers import openai_sdk  # loaded by _load_sdk before any call

            self._client = openai_sdk.make_client(self._config, self._key)
        return self._client

    def _http(self) -> OpenAIHTTPClient:
        if self._http_client is None:
            raise Failure(ErrorKind.AUTH, missing_key_reason(self.name)).to_error(self.name)
        return self._http_client

    def _shape_error(self, exc: Exception) -> UpstreamError:
        scrub_exception(exc)
        text = f"the response did not match the API schema: {type(exc).__name__}: {exception_text(exc)}"
        return Failure(ErrorKind.SERVER_ERROR, text).to_error(self.name)

    def _chat_arguments(self, request: ChatRequest, deployment: DeploymentConfig, *, stream: bool) -> dict[str, Any]:
        """Build the JSON body of a Chat Completions request."""
        reject_several_choices(request, self.name)
        body: dict[str, Any] = {
            "model": upstream_model(self.name, deployment),
            "messages": [message.model_dump(exclude_none=True) for message in request.messages],
        }
        for field in _FORWARDED_FIELDS:
            value = getattr(request, field)
            if value is not None:
                body[field] = _plain(value)
        if request.output_limit is None and deployment.max_tokens is not None:
            # NOTE: older OpenAI-compatible servers read only max_tokens and ignore this cap.
            body["max_completion_tokens"] = deployment.max_tokens
        # Parameters the unified request does not model go upstream as sent, and win over a
        # modelled field of the same name, as the SDK's extra_body did.
        body.update(request.extra_params)

        if stream:
            options = request.stream_options.model_dump() if request.stream_options else {}
            body["stream"] = True
            body["stream_options"] = {**options, "include_usage": True}
        return body

    def _chat_result(self, request: ChatRequest, completion: dict[str, Any]) -> ChatResult:
        choices = completion.get("choices")
        if not choices:
            raise Failure(ErrorKind.SERVER_ERROR, "the response has no choices").to_error(self.name)
        choice = choices[0]
        message = choice.get("message") or {}
        tool_calls = [_tool_call(call) for call in message.get("tool_calls") or [] if call.get("type") == "function"]

        raw_usage = completion.get("usage")
        if raw_usage is not None:
            usage = usage_from_openai(raw_usage)
        else:
            outputs = [message.get("content") or "", *(call.function.arguments for call in tool_calls)]
            usage = estimated_usage(request, outputs)
        return ChatResult(
            content=message.get("content"),
            finish_reason=map_finish_reason(self.name, choice.get("finish_reason"), FINISH_REASONS),
            usage=usage,
            tool_calls=tool_calls,
            refusal=message.get("refusal"),
            upstream_model=completion.get("model") or "",
            upstream_id=completion.get("id") or "",
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

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage_from_openai(usage)
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.outputs.append(content)
                events.append(StreamEvent(content=content))
            for call in delta.get("tool_calls") or ():
                events.append(StreamEvent(tool_call=self._tool_delta(call)))
            finish = choice.get("finish_reason")
            if finish is not None:
                self.finish_reason = map_finish_reason(self.provider, finish, FINISH_REASONS)
        return events

    def _tool_delta(self, call: dict[str, Any]) -> ToolCallDelta:
        # Some compatible servers repeat id and name on every fragment; pass them on once.
        index: int = call["index"]
        first = index not in self.started_tools
        self.started_tools.add(index)
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        self.outputs.append(arguments)
        return ToolCallDelta(
            index=index,
            arguments=arguments,
            id=call.get("id") if first else None,
            name=function.get("name") if first else None,
        )

    def finish(self) -> list[StreamEvent]:
        if self.finish_reason is None:
            raise Failure(
                ErrorKind.CONNECTION, "the stream ended before a finish_reason; the connection was cut"
            ).to_error(self.provider)
        usage = self.usage if self.usage is not None else estimated_usage(self.request, self.outputs)
        return [StreamEvent(finish_reason=self.finish_reason), StreamEvent(usage=usage)]


_SDK_MODULE = "sage_bridge.providers.openai_sdk"


async def _load_sdk() -> None:
    """Import the openai SDK on first use, on a worker thread.

    The import took about 0.6 s on the benchmark machine. On the event loop's thread it would
    stall every request in flight, so it runs on a worker thread while the loop keeps serving.
    """
    if _SDK_MODULE not in sys.modules:
        await asyncio.to_thread(importlib.import_module, _SDK_MODULE)


def _tool_call(call: dict[str, Any]) -> ToolCall:
    function = call["function"]
    return ToolCall(id=call["id"], function=FunctionCall(name=function["name"], arguments=function["arguments"]))


def usage_from_openai(usage: dict[str, Any]) -> Usage:
    """Translate OpenAI usage; its cached tokens are already counted in prompt_tokens."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=details.get("cached_tokens") or 0,
        raw=_without_none(usage),
    )


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    """Drop null members at every depth, as the SDK's model_dump(exclude_none=True) did."""
    return {
        key: _without_none(item) if isinstance(item, dict) else item
        for key, item in value.items()
        if item is not None
    }


def _plain(value: Any) -> Any:
    """Dump pydantic values (tools) to plain JSON shapes."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    return value
