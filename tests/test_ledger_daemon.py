"""The ledger on the real daemon: rows survive SIGKILL, spend is rebuilt at start, usage reports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from tests.conftest import SpawnDaemon
from tests.harness import Daemon
from tests.mocks.base import Reply
from tests.mocks.openai_mock import OpenAIMock
from tests.routing_env import openai_providers

USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100, "prompt_tokens_details": {"cached_tokens": 0}}


@pytest.fixture
async def upstream() -> AsyncIterator[OpenAIMock]:
    async with OpenAIMock() as mock:
        mock.default = Reply(text="counted", usage=USAGE)
        yield mock


def config(mock: OpenAIMock) -> str:
    return "version: 1\n" + openai_providers({"cloud": mock}) + """\
models:
  priced: {provider: cloud, model: gpt-4o, price: {input: 2.50, output: 10.00}, max_tokens: 100}
routes:
  chat: {targets: [priced], terminal: none}
budgets:
  - {scope: global, usd: 5, per: day}
"""


def bridgectl(daemon: Daemon, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "sage_bridge.cli.main", "--socket", str(daemon.socket), *args],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


async def test_answered_request_survives_sigkill(spawn_daemon: SpawnDaemon, upstream: OpenAIMock) -> None:
    daemon = spawn_daemon(config(upstream))
    raw = await daemon.async_openai_client().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}]
    )
    daemon.kill()  # SIGKILL right after the answer arrived

    restarted = Daemon(daemon.workdir, config(upstream)).start()
    try:
        report = json.loads(bridgectl(restarted, "usage", "--by", "route", "--format", "json"))
        status = json.loads(bridgectl(restarted, "status", "--json"))
    finally:
        restarted.stop()
    [line] = report["lines"]
    assert raw.headers["x-bridge-cost-usd"] == "0.0035"
    assert line["key"] == "chat"
    assert line["requests"] == 1
    assert Decimal(line["cost_usd"]) == Decimal("0.0035")  # 1000 x 2.50/1M + 100 x 10/1M
    assert line["prompt_tokens"] == 1000
    [budget] = status["budgets"]
    assert Decimal(budget["spent_usd"]) == Decimal("0.0035")


async def test_usage_formats(spawn_daemon: SpawnDaemon, upstream: OpenAIMock) -> None:
    daemon = spawn_daemon(config(upstream))
    client = daemon.async_openai_client()
    for _ in range(2):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}])
    table = bridgectl(daemon, "usage", "--by", "deployment")
    csv_text = bridgectl(daemon, "usage", "--by", "day", "--format", "csv")
    assert "priced" in table
    assert "0.007" in table
    assert csv_text.splitlines()[0].startswith("day,requests,ok")
    assert csv_text.splitlines()[1].split(",")[1] == "2"
