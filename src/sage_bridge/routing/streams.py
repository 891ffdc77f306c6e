"""Streams: commit to a deployment at its first output, then settle when the stream ends.

A stream commits at its first content or tool-call delta. Until then a failure is an ordinary
failed attempt and the router falls back; after it, the client already has bytes, so a failure
ends the stream with an error event instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sage_bridge.accounting.cost import estimate_text_tokens
from sage_bridge.errors import ErrorKind, UpstreamError
from sage_bridge.graph.model import Deployment
from sage_bridge.limits.admission import Admission
from sage_bridge.providers.base import Provider
from sage_bridge.routing.context import RequestContext
from sage_bridge.routing.lease import Lease
from sage_bridge.routing.settlement import Accountant
from sage_bridge.types import ChatRequest, StreamEvent, Usage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamAnswer:
    """A stream committed to one deployment, with its first events already received."""

    deployment: Deployment
    ctx: RequestContext
    head: list[StreamEvent]
    rest: AsyncIterator[StreamEvent]
    lease: Lease | None = None
    accountant: Accountant | None = None
    admission: Admission | None = None
    events: AsyncIterator[StreamEvent] = field(init=False)

    def __post_init__(self) -> None:
        self.events = self._settling_events()

    def bind(self, lease: Lease, accountant: Accountant, admission: Admission | None) -> None:
        """Hand the stream what it must settle and release when it ends."""
        self.lease, self.accountant, self.admission = lease, accountant, admission

    async def aclose(self) -> None:
        """Close the stream; if it never ran to its end, settle it as cancelled."""
        await self.events.aclose()  # type: ignore[attr-defined]
        if self.lease is not None:
            await self._settle_estimate("", None, cancelled=True)
            await self.rest.aclose()  # type: ignore[attr-defined]

    async def _settling_events(self) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        usage: Usage | None = None
        failure: ErrorKind | None = None
        finished = False
        try:
            async for event in self._all_events():
                text.append(event.content or (event.tool_call.arguments if event.tool_call else ""))
                if event.usage is not None:
                    usage = event.usage
                    # The row commits before the usage event lets the server write the last bytes.
                    await self._settle(usage, None, cancelled=False)
                finished = finished or event.finish_reason is not None
                yield event
        except UpstreamError as exc:
            failure = exc.kind
            raise
        finally:
            if usage is None:
                await self._settle_estimate("".join(text), failure, cancelled=failure is None and not finished)

    async def _settle_estimate(self, text: str, failure: ErrorKind | None, cancelled: bool) -> None:
        """Settle a stream that ended without usage from the provider, counting tokens locally."""
        estimate = Usage(
            prompt_tokens=self.ctx.estimated_prompt_tokens,
            completion_tokens=estimate_text_tokens(text),
            estimated=True,
        )
        await asyncio.shield(self._settle(estimate, failure, cancelled))

    async def _all_events(self) -> AsyncIterator[StreamEvent]:
        try:
            for event in self.head:
                yield event
            while True:
                # Time spent waiting for the provider's next event is upstream time, not overhead.
                started = time.perf_counter()
                try:
                    event = await anext(self.rest)
                except StopAsyncIteration:
                    break
                finally:
                    self.ctx.upstream_seconds += time.perf_counter() - started
                yield event
        finally:
            await self.rest.aclose()  # type: ignore[attr-defined]

    async def _settle(self, usage: Usage, failure: ErrorKind | None, cancelled: bool) -> None:
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.release()
        if self.lease is None or self.accountant is None:
            return
        lease, self.lease = self.lease, None  # settle exactly once
        await self.accountant.settle(self.ctx, lease, usage, failure=failure, cancelled=cancelled)


async def open_stream(provider: Provider, deployment: Deployment, request: ChatRequest, ctx: RequestContext) -> StreamAnswer:
    """Start the stream and read until its first output (or its end); raise if it fails first."""
    events = provider.stream_chat(request, deployment.config)
    head: list[StreamEvent] = []
    try:
        async for event in events:
            if event.rate_limits is not None:
                ctx.rate_limits = event.rate_limits
                continue
            head.append(event)
            if event.commits or event.finish_reason is not None:
                break
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    ctx.first_token_ms = ctx.elapsed_ms()
    return StreamAnswer(deployment, ctx, head, events)


__all__ = ["StreamAnswer", "open_stream"]
