"""bridgectl's HTTP client for the daemon's Unix socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp


class DaemonUnreachable(Exception):
    """No daemon answers on the socket."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(
            f"bridged is not running on {socket_path}; start it with `bridged` (or `make run`), "
            "or pass --socket to point at another daemon"
        )


class DaemonError(Exception):
    """The daemon answered with an error body."""


class BridgeClient:
    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout * 20)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def get_json(self, path: str) -> Any:
        try:
            async with self._session() as session, session.get(f"http://localhost{path}") as response:
                return await _json_or_raise(response)
        except (aiohttp.ClientConnectorError, FileNotFoundError) as exc:
            raise DaemonUnreachable(self.socket_path) from exc

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield each parsed chunk of a streamed chat completion."""
        try:
            async with self._session() as session, session.post(
                "http://localhost/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                if response.status != 200:
                    await _json_or_raise(response)
                async for line in response.content:
                    text = line.decode("utf-8").strip()
                    if not text.startswith("data: "):
                        continue
                    payload = text.removeprefix("data: ")
                    if payload == "[DONE]":
                        return
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise DaemonError(chunk["error"].get("message", "the stream failed"))
                    yield chunk
        except (aiohttp.ClientConnectorError, FileNotFoundError) as exc:
            raise DaemonUnreachable(self.socket_path) from exc


async def _json_or_raise(response: aiohttp.ClientResponse) -> Any:
    data = await response.json(content_type=None)
    if response.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise DaemonError(error.get("message", f"the daemon answered HTTP {response.status}"))
    return data
