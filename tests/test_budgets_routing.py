"""Budgets in the request path: admission under concurrency, unpriced deployments, fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from sage_bridge.accounting.ledger_queries import LedgerReader
from sage_bridge.errors import BudgetExceeded
from tests.mocks.base import Reply
from tests.mocks.openai_mock import OpenAIMock
from tests.routing_env import chat, context, local_deployment, openai_providers, runtime_for


@pytest.fixture
async def upstream() -> AsyncIterator[OpenAIMock]:
    async with OpenAIMock() as mock:
        yield mock


def priced_config(mock: OpenAIMock, budget: str, price: str = "price: {input: 3, output: 15}", terminal: str = "none") -> str:
    text = openai_providers({"cloud": mock}) + f"""\
models:
  sonnet: {{provider: cloud, model: some-model, {price}}}
{local_deployment()}routes:
  chat: {{targets: [sonnet], terminal: {terminal}}}
budgets:
  - {budget}
"""
    return text


USAGE_100_40 = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140, "prompt_tokens_details": {"cached_tokens": 0}}


async def test_concurrent_requests_never_overspend(tmp_path: Path, upstream: OpenAIMock) -> None:
    upstream.default = Reply(text="ok", usage=USAGE_100_40, delay=0.3)
    config = priced_config(upstream, "{scope: global, usd: 0.001, per: day}")
    async with runtime_for(tmp_path, config) as runtime:
        requests = [runtime.router.chat(runtime.graph, chat("chat", "hi", max_tokens=40), context()) for _ in range(5)]
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        [snapshot] = runtime.registries.budgets.snapshot()
        await runtime.registries.ledger.close()
        spent = LedgerReader(tmp_path / "state" / "ledger.sqlite3").spend_since("global", snapshot.window_start)
    answered = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, BudgetExceeded)]
    assert upstream.calls == 1
    assert len(answered) == 1
    assert len(refused) == 4
    assert all(error.code == "budget_exceeded" and error.status == 429 for error in refused)
    assert snapshot.spent_usd == Decimal("0.0009")
    assert snapshot.reserved_usd == 0
    assert spent.usd == Decimal("0.0009")


async def test_unpriced_deployment_is_refused_before_any_call(tmp_path: Path, upstream: OpenAIMock) -> None:
    config = priced_config(upstream, "{scope: global, usd: 10, per: month}", price="max_tokens: 50")
    async with runtime_for(tmp_path, config) as runtime:
        with pytest.raises(BudgetExceeded) as caught:
            await runtime.router.chat(runtime.graph, chat("chat"), context())
        await runtime.registries.ledger.close()
    [row] = _ledger_rows(tmp_path)
    assert upstream.calls == 0
    assert "has no price" in caught.value.message
    assert caught.value.code == "budget_exceeded"
    assert row["outcome"] == "rejected"
    assert row["deployment"] is None  # no deployment ran, so no cost of 0 is booked against it
    assert row["attempts"] == 0


async def test_over_budget_with_fallback_ends_at_local_terminal(tmp_path: Path, upstream: OpenAIMock) -> None:
    config = priced_config(upstream, "{scope: 'route:chat', usd: 0.0000001, per: day, on_exceed: fallback}", terminal="smollm2")
    async with runtime_for(tmp_path, config) as runtime:
        ctx = context()
        result = await runtime.router.chat(runtime.graph, chat("chat", "Hi", max_tokens=4), ctx)
    assert upstream.calls == 0
    assert ctx.deployment is not None and ctx.deployment.name == "smollm2"
    assert result.content is not None
    assert [failure.kind for failure in ctx.failures] == ["over_budget"]


async def test_cost_is_settled_from_real_usage(tmp_path: Path, upstream: OpenAIMock) -> None:
    upstream.default = Reply(text="ok", usage={**USAGE_100_40, "prompt_tokens": 2006, "completion_tokens": 300,
                                               "prompt_tokens_details": {"cached_tokens": 1920}})
    config = priced_config(upstream, "{scope: global, usd: 100, per: month}",
                           price="price: {input: 2.50, output: 10.00, cached_input: 1.25}")
    async with runtime_for(tmp_path, config) as runtime:
        ctx = context()
        await runtime.router.chat(runtime.graph, chat("chat", max_tokens=300), ctx)
        await runtime.registries.ledger.close()
    assert ctx.cost == Decimal("0.005615")
    assert [row["cost_usd"] for row in _ledger_rows(tmp_path)] == ["0.005615"]


def _ledger_rows(tmp_path: Path) -> list[dict[str, object]]:
    import sqlite3

    connection = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3")
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute("SELECT * FROM requests")]
    finally:
        connection.close()
