"""Rate limits in the request path: limiter-aware routing, client limits, concurrency caps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sage_bridge.errors import RateLimited
from tests.mocks.base import Reply
from tests.mocks.openai_mock import OpenAIMock
from tests.routing_env import chat, context, openai_providers, runtime_for


@pytest.fixture
async def mocks() -> AsyncIterator[tuple[OpenAIMock, OpenAIMock]]:
    async with OpenAIMock() as first, OpenAIMock() as second:
        yield first, second


def config(mocks: tuple[OpenAIMock, OpenAIMock], first_limits: str = "", extra: str = "") -> str:
    first, second = mocks
    return openai_providers({"one": first, "two": second}) + f"""\
models:
  first: {{provider: one, model: gpt-4o{first_limits}}}
  second: {{provider: two, model: gpt-4o-mini}}
routes:
  chat: {{targets: [first, second], terminal: none}}
  only-first: {{targets: [first], terminal: none}}
{extra}"""


async def test_deployment_at_rpm_sends_traffic_to_next_target(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    first, second = mocks
    async with runtime_for(tmp_path, config(mocks, ", rpm: 2")) as runtime:
        chosen = []
        for _ in range(3):
            ctx = context()
            await runtime.router.chat(runtime.graph, chat("chat"), ctx)
            assert ctx.deployment is not None
            chosen.append(ctx.deployment.name)
    assert chosen == ["first", "first", "second"]
    assert first.calls == 2
    assert second.calls == 1


async def test_client_over_rpm_gets_429_and_no_upstream_call(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    first, _ = mocks
    extra = 'clients:\n  "uid:4242": {rpm: 1}\n'
    async with runtime_for(tmp_path, config(mocks, extra=extra)) as runtime:
        await runtime.router.chat(runtime.graph, chat("only-first"), context("uid:4242"))
        with pytest.raises(RateLimited) as caught:
            await runtime.router.chat(runtime.graph, chat("only-first"), context("uid:4242"))
    assert first.calls == 1
    assert caught.value.status == 429
    assert caught.value.code == "rate_limited"
    assert int(caught.value.headers()["Retry-After"]) >= 1
    assert "uid:4242" in caught.value.message


async def test_concurrency_cap_holds_under_200_requests(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    first, _ = mocks
    first.default = Reply(text="ok", delay=0.05)
    async with runtime_for(tmp_path, config(mocks, ", max_concurrency: 50")) as runtime:
        requests = [runtime.router.chat(runtime.graph, chat("only-first"), context()) for _ in range(200)]
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
    answered = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, RateLimited)]
    assert first.max_in_flight <= 50
    assert first.max_in_flight > 1
    assert len(answered) + len(refused) == 200
    assert first.calls == len(answered)


async def test_upstream_rate_limit_headers_hold_a_deployment_back(tmp_path: Path,
                                                                  mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    first, second = mocks
    first.enqueue(Reply(text="last one", headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}))
    async with runtime_for(tmp_path, config(mocks)) as runtime:
        await runtime.router.chat(runtime.graph, chat("chat"), context())
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat"), ctx)
        [status] = [s for s in runtime.registries.limiters.snapshot().deployments if s.name == "first"]
    assert first.calls == 1
    assert second.calls == 1
    assert ctx.deployment is not None and ctx.deployment.name == "second"
    assert status.held_back_for > 0


async def test_stream_rate_limit_headers_are_read_too(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    first, second = mocks
    first.enqueue(Reply(text="streamed", headers={"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}))
    async with runtime_for(tmp_path, config(mocks)) as runtime:
        answer = await runtime.router.stream(runtime.graph, chat("chat", stream=True), context())
        async for _ in answer.events:
            pass
        await answer.aclose()
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat"), ctx)
    assert ctx.deployment is not None and ctx.deployment.name == "second"
    assert first.calls == 1
