"""The router over mock upstreams: retries, fallbacks, terminals, context windows, cooldowns."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sage_bridge.errors import AllTargetsFailed, AllTargetsRateLimited, ErrorKind, UnsupportedParameter, UpstreamError
from tests.mocks.base import Reply
from tests.mocks.openai_mock import OpenAIMock, openai_error
from tests.routing_env import RETRY_POLICIES, RecordingClock, chat, context, local_deployment, openai_providers, runtime_for


@pytest.fixture
async def mocks() -> AsyncIterator[tuple[OpenAIMock, OpenAIMock]]:
    async with OpenAIMock() as primary, OpenAIMock() as backup:
        yield primary, backup


def two_targets(mocks: tuple[OpenAIMock, OpenAIMock], route_extra: str = "", terminal: bool = False,
                primary_extra: str = "", backup_extra: str = "") -> str:
    primary, backup = mocks
    text = openai_providers({"p1": primary, "p2": backup}) + RETRY_POLICIES + f"""\
models:
  primary: {{provider: p1, model: gpt-4o{primary_extra}}}
  backup: {{provider: p2, model: gpt-4o-mini{backup_extra}}}
"""
    if terminal:
        text += local_deployment() + "terminal: smollm2\n"
    return text + f"routes:\n  chat: {{targets: [primary, backup]{route_extra}}}\n"


async def test_retry_after_sets_each_wait(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, _ = mocks
    primary.enqueue(
        openai_error(429, "Rate limit reached", error_type="requests", headers={"retry-after": "1"}),
        openai_error(429, "Rate limit reached", error_type="requests", headers={"retry-after": "4"}),
        Reply(text="third time lucky"),
    )
    clock = RecordingClock()
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: standard"), clock) as runtime:
        ctx = context()
        result = await runtime.router.chat(runtime.graph, chat("chat"), ctx)
    assert result.content == "third time lucky"
    assert primary.calls == 3
    assert clock.sleeps[0] >= 1.0
    assert clock.sleeps[1] >= 4.0
    assert len(clock.sleeps) == 2
    assert ctx.attempts == 3


async def test_retry_after_beyond_max_delay_moves_on(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(429, "slow down", error_type="requests", headers={"retry-after": "30"}))
    clock = RecordingClock()
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: standard"), clock) as runtime:
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat"), ctx)
    assert clock.sleeps == []
    assert primary.calls == 1
    assert backup.calls == 1
    assert ctx.deployment is not None and ctx.deployment.name == "backup"


async def test_invalid_request_is_neither_retried_nor_sent_on(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(400, "Invalid value for 'temperature'", param="temperature"))
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: standard"), RecordingClock()) as runtime:
        with pytest.raises(UpstreamError) as caught:
            await runtime.router.chat(runtime.graph, chat("chat"), context())
    assert caught.value.kind is ErrorKind.INVALID_REQUEST
    assert caught.value.status == 400
    assert primary.calls == 1
    assert backup.calls == 0


async def test_auth_error_falls_through_to_next_target(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(401, "Incorrect API key provided", error_type="invalid_request_error", code="invalid_api_key"))
    backup.enqueue(Reply(text="from the backup"))
    async with runtime_for(tmp_path, two_targets(mocks), RecordingClock()) as runtime:
        ctx = context()
        result = await runtime.router.chat(runtime.graph, chat("chat"), ctx)
    assert result.content == "from the backup"
    assert primary.calls == 1
    assert ctx.attempts == 2


async def test_auth_error_cools_the_deployment_down(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(401, "Incorrect API key provided", code="invalid_api_key"))
    async with runtime_for(tmp_path, two_targets(mocks), RecordingClock()) as runtime:
        await runtime.router.chat(runtime.graph, chat("chat"), context())
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat"), ctx)
        states = {status.deployment: status.state.value for status in runtime.registries.cooldowns.snapshot()}
    assert primary.calls == 1
    assert backup.calls == 2
    assert [failure.kind for failure in ctx.failures] == ["cooling_down"]
    assert re.search(r"cooling down after repeated failures, for \d+ s more", ctx.failures[0].message)
    assert states["primary"] == "open"


async def test_every_cloud_failure_ends_at_local_terminal(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(500, "The server had an error", error_type="server_error"))
    backup.enqueue(openai_error(503, "Service unavailable", error_type="server_error"))
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: none", terminal=True), RecordingClock()) as runtime:
        ctx = context()
        result = await runtime.router.chat(runtime.graph, chat("chat", "Say hello", temperature=0), ctx)
    assert ctx.deployment is not None and ctx.deployment.name == "smollm2"
    assert result.content
    assert result.usage.completion_tokens > 0
    assert [failure.kind for failure in ctx.failures] == ["server_error", "overloaded"]


async def test_all_targets_failing_lists_attempts(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(500, "boom", error_type="server_error"))
    backup.enqueue(openai_error(403, "not allowed", error_type="permission_error"))
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: none"), RecordingClock()) as runtime:
        with pytest.raises(AllTargetsFailed) as caught:
            await runtime.router.chat(runtime.graph, chat("chat"), context())
    attempts = caught.value.body()["error"]["attempts"]
    assert [(a["deployment"], a["kind"]) for a in attempts] == [("primary", "server_error"), ("backup", "permission")]
    assert caught.value.status == 502


async def test_all_targets_rate_limited_is_429(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(429, "slow down", error_type="requests", headers={"retry-after": "7"}))
    backup.enqueue(openai_error(429, "slow down", error_type="tokens", headers={"retry-after": "3"}))
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: none"), RecordingClock()) as runtime:
        with pytest.raises(AllTargetsRateLimited) as caught:
            await runtime.router.chat(runtime.graph, chat("chat"), context())
    attempts = caught.value.body()["error"]["attempts"]
    assert caught.value.status == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.headers() == {"Retry-After": "3"}
    assert [(a["deployment"], a["kind"]) for a in attempts] == [("primary", "rate_limited"), ("backup", "rate_limited")]
    assert "retry in 3 s" in caught.value.message


async def test_rate_limit_beside_other_failure_is_502(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(429, "slow down", error_type="requests", headers={"retry-after": "7"}))
    backup.enqueue(openai_error(500, "boom", error_type="server_error"))
    async with runtime_for(tmp_path, two_targets(mocks, ", retry: none"), RecordingClock()) as runtime:
        with pytest.raises(AllTargetsFailed) as caught:
            await runtime.router.chat(runtime.graph, chat("chat"), context())
    assert not isinstance(caught.value, AllTargetsRateLimited)
    assert caught.value.status == 502


async def test_prompt_too_big_for_window_skips_target(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    config = two_targets(mocks, primary_extra=", context: 100", backup_extra=", context: 100000")
    async with runtime_for(tmp_path, config, RecordingClock()) as runtime:
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat", "word " * 2000), ctx)
    assert primary.calls == 0
    assert backup.calls == 1
    assert [failure.kind for failure in ctx.failures] == ["context_window"]


async def test_context_length_error_moves_to_larger_window(tmp_path: Path, mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, backup = mocks
    primary.enqueue(openai_error(400, "This model's maximum context length is 8192 tokens.", code="context_length_exceeded",
                                 param="messages"))
    config = two_targets(mocks, primary_extra=", context: 8192", backup_extra=", context: 128000")
    async with runtime_for(tmp_path, config, RecordingClock()) as runtime:
        ctx = context()
        result = await runtime.router.chat(runtime.graph, chat("chat"), ctx)
    assert result.content
    assert backup.calls == 1
    assert ctx.deployment is not None and ctx.deployment.name == "backup"


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


async def test_unsupported_parameter_moves_to_a_target_that_honours_it(tmp_path: Path,
                                                                       mocks: tuple[OpenAIMock, OpenAIMock]) -> None:
    primary, _ = mocks
    config = openai_providers({"p1": primary}) + "models:\n  cloud: {provider: p1, model: gpt-4o}\n" + local_deployment()
    config += "routes:\n  chat: {targets: [smollm2, cloud], terminal: none}\n  local-only: {targets: [smollm2], terminal: none}\n"
    async with runtime_for(tmp_path, config, RecordingClock()) as runtime:
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat", tools=TOOLS), ctx)
        with pytest.raises(UnsupportedParameter) as caught:
            await runtime.router.chat(runtime.graph, chat("local-only", tools=TOOLS), context())
    assert ctx.deployment is not None and ctx.deployment.name == "cloud"
    assert [failure.kind for failure in ctx.failures] == ["unsupported_params"]
    assert ctx.attempts == 1
    assert primary.calls == 1
    assert caught.value.status == 400
    assert caught.value.param == "tools"
