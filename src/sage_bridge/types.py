"""The unified request, response, stream and usage model.

It follows OpenAI Chat Completions semantics because that is what clients already speak.
Provider adapters translate between these types and their wire formats; nothing else in the
bridge sees a provider SDK type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
Role = Literal["system", "developer", "user", "assistant", "tool"]


class _Strict(BaseModel):
    """A message part: unknown keys are rejected so typos reach the client as a 400."""

    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON document as a string, exactly as OpenAI sends it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """One chat message. Extra keys OpenAI may add later are kept, not rejected."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """Join the text of this message, ignoring non-text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """A Chat Completions request as a client sent it.

    Parameters the bridge does not model are kept in `model_extra`; adapters for
    OpenAI-compatible servers forward them, and the others drop or reject them by the
    deployment's `unsupported_params` setting.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None

    @property
    def output_limit(self) -> int | None:
        """Return the client's cap on generated tokens, whichever field carried it."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_usage_chunk(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def extra_params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        """Return the inputs as a list of strings; token-id inputs raise TypeError."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        raise TypeError("token-id input")


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI terms, plus what cost accounting needs.

    `prompt_tokens` always counts every input token, cached ones included, as OpenAI does;
    `cached_tokens` is the subset read from a prompt cache and `cache_write_tokens` the subset
    written to one. `raw` keeps the provider's own usage object for cost accounting.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(slots=True)
class ChatResult:
    """A complete, non-streamed answer from one deployment."""

    content: str | None
    finish_reason: FinishReason
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    refusal: str | None = None
    upstream_model: str = ""
    upstream_id: str = ""
    rate_limits: dict[str, str] = field(default_factory=dict)  # the provider's rate-limit headers


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of one tool call. `index` counts tool calls from 0, as OpenAI does;
    `id` and `name` are set only on a call's first fragment."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed answer, emitted by an adapter.

    An adapter may first yield one event with the provider's `rate_limits` headers, then yields
    content and tool-call deltas, then exactly one event with `finish_reason`, then exactly one
    event with `usage` (counted locally and flagged estimated when the provider sent none). The
    server adds the role chunk and the framing.
    """

    content: str | None = None
    tool_call: ToolCallDelta | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    rate_limits: dict[str, str] | None = None  # the provider's rate-limit headers, before any delta

    @property
    def commits(self) -> bool:
        """True when the event carries output, after which the stream cannot fall back."""
        return bool(self.content) or self.tool_call is not None


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage
    upstream_model: str = ""
