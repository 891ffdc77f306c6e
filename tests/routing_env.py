"""An in-process bridge runtime over mock upstreams, for router tests on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.routing.context import RequestContext
from sage_bridge.runtime import Runtime
from sage_bridge.types import ChatRequest
from tests.harness import LOCAL_MODEL
from tests.mocks.openai_mock import OpenAIMock

RETRY_POLICIES = """\
retry_policies:
  standard: {attempts: 3, base_delay: 0.5, max_delay: 8}
  none: {attempts: 1}
"""


class RecordingClock:
    """A clock whose sleeps return at once, advancing its time and recording each wait."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


def openai_providers(mocks: dict[str, OpenAIMock]) -> str:
    lines = ["providers:", "  local: {type: llama_cpp, threads: 2}"]
    for name, mock in mocks.items():
        lines.append(f"  {name}: {{type: openai, base_url: '{mock.base_url}', api_key: {mock.api_key}}}")
    return "\n".join(lines) + "\n"


def local_deployment(context: int = 2048) -> str:
    return f'  smollm2: {{provider: local, path: "{LOCAL_MODEL}", context: {context}, max_tokens: 16}}\n'


@contextlib.asynccontextmanager
async def runtime_for(tmp_path: Path, config_text: str, clock: RecordingClock | None = None) -> AsyncIterator[Runtime]:
    path = tmp_path / "bridge.yaml"
    path.write_text("version: 1\n" + config_text)
    graph = compile_graph(load_config(path, {}))
    settings = DaemonSettings(config=path, socket=tmp_path / "unused.sock", state_dir=tmp_path / "state")
    runtime = await Runtime.start(settings, graph, clock)
    try:
        yield runtime
    finally:
        await runtime.close()


def chat(model: str, text: str = "Hello there", **params: object) -> ChatRequest:
    return ChatRequest.model_validate({"model": model, "messages": [{"role": "user", "content": text}], **params})


_ids = iter(range(1_000_000))


def context(client: str = "uid:1000") -> RequestContext:
    return RequestContext(request_id=f"test-{next(_ids)}", client=client)
