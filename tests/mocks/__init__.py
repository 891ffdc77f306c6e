"""Mock upstreams for the cloud providers, and pytest fixtures that start them.

In a test module, import the fixtures you need (or list this package in `pytest_plugins` of a
conftest.py to make them available everywhere):

    from tests.mocks import openai_upstream  # noqa: F401  (a pytest fixture)

    async def test_something(openai_upstream):
        openai_upstream.enqueue(Reply(text="hi"))
        ...  # point a client at openai_upstream.base_url with openai_upstream.api_key

Each fixture yields a started mock on 127.0.0.1 with a free port and stops it afterwards.
Outside pytest use the mocks as async context managers (`async with OpenAIMock() as mock:`),
or as processes: `python -m tests.mocks.openai_mock --port 0` prints the base URL to stdout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from sage_bridge.types import FinishReason, StreamEvent, Usage
from tests.mocks.base import SSE, MockUpstream, RecordedRequest, Reply, Scripted, ToolCallSpec

if TYPE_CHECKING:
    from tests.mocks.anthropic_mock import AnthropicMock
    from tests.mocks.cohere_mock import CohereMock
    from tests.mocks.openai_mock import OpenAIMock

# The provider mocks are imported inside the fixtures, so that `python -m tests.mocks.<mock>`
# does not import its own module twice (once through this package, once as __main__).


@pytest.fixture
async def openai_upstream() -> AsyncIterator[OpenAIMock]:
    from tests.mocks.openai_mock import OpenAIMock

    async with OpenAIMock() as mock:
        yield mock


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[AnthropicMock]:
    from tests.mocks.anthropic_mock import AnthropicMock

    async with AnthropicMock() as mock:
        yield mock


@pytest.fixture
async def cohere_upstream() -> AsyncIterator[CohereMock]:
    from tests.mocks.cohere_mock import CohereMock

    async with CohereMock() as mock:
        yield mock


@dataclass
class AssembledCall:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    first_fragment_had_id: bool = False
    later_fragments_with_id: int = 0

    def parsed_arguments(self) -> Any:
        return json.loads(self.arguments)


@dataclass
class AssembledStream:
    """What a client would rebuild from a stream of StreamEvents."""

    content: str | None
    tool_calls: list[AssembledCall]
    finish_reasons: list[FinishReason] = field(default_factory=list)
    usages: list[Usage] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)  # kinds of the last two events

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.finish_reasons[0] if self.finish_reasons else None

    @property
    def usage(self) -> Usage | None:
        return self.usages[0] if self.usages else None


def assemble(events: Iterable[StreamEvent]) -> AssembledStream:
    """Join a stream's deltas the way an OpenAI client does, keeping what tests check."""
    events = list(events)
    texts: list[str] = []
    calls: dict[int, AssembledCall] = {}
    result = AssembledStream(content=None, tool_calls=[])
    for event in events:
        if event.content:
            texts.append(event.content)
        if event.tool_call is not None:
            _add_fragment(calls, event)
        if event.finish_reason is not None:
            result.finish_reasons.append(event.finish_reason)
        if event.usage is not None:
            result.usages.append(event.usage)
    result.content = "".join(texts) if texts else None
    result.tool_calls = [calls[index] for index in sorted(calls)]
    result.tail = [_kind(event) for event in events[-2:]]
    return result


def _add_fragment(calls: dict[int, AssembledCall], event: StreamEvent) -> None:
    delta = event.tool_call
    assert delta is not None
    call = calls.get(delta.index)
    if call is None:
        call = calls[delta.index] = AssembledCall(delta.index, delta.id, delta.name)
        call.first_fragment_had_id = delta.id is not None
    elif delta.id is not None or delta.name is not None:
        call.later_fragments_with_id += 1
    call.arguments += delta.arguments


def _kind(event: StreamEvent) -> str:
    if event.finish_reason is not None:
        return "finish"
    if event.usage is not None:
        return "usage"
    return "delta"


def token_fields(usage: Usage | None) -> tuple[int, int, int, int, bool] | None:
    """Return the counts of a Usage, leaving out `raw`, for comparisons."""
    if usage is None:
        return None
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.estimated)


__all__ = [
    "SSE",
    "AssembledStream",
    "MockUpstream",
    "RecordedRequest",
    "Reply",
    "Scripted",
    "ToolCallSpec",
    "anthropic_upstream",
    "assemble",
    "cohere_upstream",
    "openai_upstream",
    "token_fields",
]
