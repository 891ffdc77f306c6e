"""Access control: peer uid identity, client keys, the uid and group allowlist, admin access,
the TCP listener and the socket's group."""

from __future__ import annotations

import grp
import hashlib
import io
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sage_bridge.config.schema import ServerConfig
from sage_bridge.logs import build_handler
from sage_bridge.server import identity
from sage_bridge.server.identity import PeerCredentials
from sage_bridge.server.listeners import ListenerError, apply_group, listen_tcp, listen_unix
from tests.app_env import chat_body, cloud_config, serve_app, serve_upstream
from tests.conftest import SpawnDaemon

CI_KEY = "ci-bot-key-5a1c9e7d3b"
OPS_KEY = "ops-key-2f8e4a6c0d"
OTHER_UID = 4242
OTHER_GID = 4343
CLIENTS = f"""\
clients:
  ci-bot: {{key_sha256: "{hashlib.sha256(CI_KEY.encode()).hexdigest()}"}}
  ops: {{key_sha256: "{hashlib.sha256(OPS_KEY.encode()).hexdigest()}"}}
"""


def server(**settings: Any) -> str:
    return "".join(f"  {key}: {json.dumps(value)}\n" for key, value in settings.items())


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = build_handler("json", stream)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def finished_clients(stream: io.StringIO) -> list[str]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line["client"] for line in lines if line.get("event") == "request_finished"]


@pytest.fixture
def other_peer(monkeypatch: pytest.MonkeyPatch) -> PeerCredentials:
    """Make every Unix peer look like uid 4242, gid 4343."""
    fake = PeerCredentials(pid=99999, uid=OTHER_UID, gid=OTHER_GID)
    monkeypatch.setattr(identity, "peer_credentials", lambda request: fake)
    return fake


async def chat(env: Any, key: str | None = None) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await env.session.post("/v1/chat/completions", json=chat_body(), headers=headers)
    await response.read()
    return response


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


# Identity.


async def test_peer_uid_is_the_identity(tmp_path: Path, log_lines: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url)) as env:
        response = await chat(env)
    assert response.status == 200
    assert finished_clients(log_lines) == [f"uid:{os.getuid()}"]


async def test_matching_client_key_names_the_client(tmp_path: Path, log_lines: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url, extra=CLIENTS)) as env:
        response = await chat(env, CI_KEY)
    assert response.status == 200
    assert finished_clients(log_lines) == ["ci-bot"]


async def test_unmatched_key_is_ignored_by_default(tmp_path: Path, log_lines: io.StringIO) -> None:
    async with serve_upstream() as upstream, serve_app(tmp_path, cloud_config(upstream.base_url, extra=CLIENTS)) as env:
        response = await chat(env, "sk-placeholder-from-an-sdk")
    assert response.status == 200
    assert finished_clients(log_lines) == [f"uid:{os.getuid()}"]


async def test_unmatched_key_is_401_when_keys_are_required(tmp_path: Path) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(require_client_key=True), extra=CLIENTS)
    async with serve_app(tmp_path, config) as env:
        response = await chat(env, "sk-wrong-key-0000000")
        error = await error_of(response)
    assert response.status == 401
    assert error["code"] == "invalid_api_key"
    assert "key_sha256" in error["message"]
    assert "sk-wrong-key-0000000" not in json.dumps(error)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_missing_key_is_401_when_keys_are_required(tmp_path: Path) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(require_client_key=True), extra=CLIENTS)
    async with serve_app(tmp_path, config) as env:
        response = await chat(env)
        error = await error_of(response)
    assert response.status == 401
    assert "Authorization: Bearer" in error["message"]


async def test_non_bearer_authorization_counts_as_no_key(tmp_path: Path) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(require_client_key=True), extra=CLIENTS)
    async with serve_app(tmp_path, config) as env:
        response = await env.session.get("/v1/models", headers={"Authorization": f"Basic {CI_KEY}"})
    assert response.status == 401


# The uid and group allowlist.


async def test_allowlist_rejects_other_uid_with_403(tmp_path: Path, other_peer: PeerCredentials,
                                                    log_lines: io.StringIO) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(allow_uids=[OTHER_UID + 1]))
    async with serve_app(tmp_path, config) as env:
        response = await chat(env)
        error = await error_of(response)
    assert response.status == 403
    assert error["type"] == "permission_error"
    assert f"uid {OTHER_UID}" in error["message"]
    assert f"uid {OTHER_UID}" in log_lines.getvalue()


async def test_allowlist_admits_listed_uid(tmp_path: Path, other_peer: PeerCredentials) -> None:
    async with serve_upstream() as upstream:
        config = cloud_config(upstream.base_url, server=server(allow_uids=[OTHER_UID]))
        async with serve_app(tmp_path, config) as env:
            response = await chat(env)
    assert response.status == 200


def existing_group() -> grp.struct_group:
    return grp.getgrgid(os.getgid())


async def test_allowlist_admits_member_of_listed_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = existing_group()
    fake = PeerCredentials(pid=99999, uid=OTHER_UID, gid=group.gr_gid)
    monkeypatch.setattr(identity, "peer_credentials", lambda request: fake)
    async with serve_upstream() as upstream:
        config = cloud_config(upstream.base_url, server=server(allow_groups=[group.gr_name]))
        async with serve_app(tmp_path, config) as env:
            response = await chat(env)
    assert response.status == 200


async def test_allowlist_with_unknown_group_admits_no_one(tmp_path: Path, other_peer: PeerCredentials) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(allow_groups=["no-such-group-sb"]))
    async with serve_app(tmp_path, config) as env:
        response = await chat(env)
    assert response.status == 403


async def test_client_key_passes_the_allowlist(tmp_path: Path, other_peer: PeerCredentials,
                                               log_lines: io.StringIO) -> None:
    async with serve_upstream() as upstream:
        config = cloud_config(upstream.base_url, server=server(allow_uids=[OTHER_UID + 1]), extra=CLIENTS)
        async with serve_app(tmp_path, config) as env:
            response = await chat(env, CI_KEY)
    assert response.status == 200
    assert finished_clients(log_lines) == ["ci-bot"]


async def test_healthz_is_open_to_everyone(tmp_path: Path, other_peer: PeerCredentials) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(allow_uids=[OTHER_UID + 1]))
    async with serve_app(tmp_path, config) as env:
        response = await env.session.get("/healthz")
    assert response.status == 200


# The admin API.


async def test_admin_rejects_other_uid_by_default(tmp_path: Path, other_peer: PeerCredentials,
                                                  log_lines: io.StringIO) -> None:
    async with serve_app(tmp_path, cloud_config("http://127.0.0.1:9/v1")) as env:
        admin = await env.session.get("/admin/status")
        models = await env.session.get("/v1/models")
        error = await error_of(admin)
    assert admin.status == 403
    assert models.status == 200
    assert "server.admin" in error["message"]
    assert f"uid {OTHER_UID} requested the admin API" in log_lines.getvalue()


async def test_admin_admits_own_uid(tmp_path: Path) -> None:
    async with serve_app(tmp_path, cloud_config("http://127.0.0.1:9/v1")) as env:
        response = await env.session.get("/admin/status")
    assert response.status == 200


async def test_admin_admits_listed_uid(tmp_path: Path, other_peer: PeerCredentials) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(admin={"uids": [OTHER_UID]}))
    async with serve_app(tmp_path, config) as env:
        response = await env.session.get("/admin/status")
    assert response.status == 200


async def test_admin_admits_listed_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = existing_group()
    fake = PeerCredentials(pid=99999, uid=OTHER_UID, gid=group.gr_gid)
    monkeypatch.setattr(identity, "peer_credentials", lambda request: fake)
    config = cloud_config("http://127.0.0.1:9/v1", server=server(admin={"groups": [group.gr_name]}))
    async with serve_app(tmp_path, config) as env:
        response = await env.session.get("/admin/status")
    assert response.status == 200


async def test_admin_admits_listed_client_only(tmp_path: Path, other_peer: PeerCredentials) -> None:
    config = cloud_config("http://127.0.0.1:9/v1", server=server(admin={"clients": ["ops"]}), extra=CLIENTS)
    async with serve_app(tmp_path, config) as env:
        ops = await env.session.get("/admin/status", headers={"Authorization": f"Bearer {OPS_KEY}"})
        ci = await env.session.get("/admin/status", headers={"Authorization": f"Bearer {CI_KEY}"})
    assert ops.status == 200
    assert ci.status == 403


# The TCP listener.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_tcp_listener_requires_a_client_key(tmp_path: Path, log_lines: io.StringIO) -> None:
    port = free_port()
    async with serve_upstream() as upstream:
        config = cloud_config(upstream.base_url, server=server(tcp={"host": "127.0.0.1", "port": port}), extra=CLIENTS)
        async with serve_app(tmp_path, config) as env:
            server_config = env.runtime.graph.loaded.config
            site = await listen_tcp(env.runner, server_config.server, server_config.clients)
            assert site is not None
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as tcp:
                anonymous = await tcp.post("/v1/chat/completions", json=chat_body())
                wrong = await tcp.post("/v1/chat/completions", json=chat_body(),
                                       headers={"Authorization": "Bearer sk-not-a-client-key"})
                keyed = await tcp.post("/v1/chat/completions", json=chat_body(),
                                       headers={"Authorization": f"Bearer {CI_KEY}"})
                admin = await tcp.get("/admin/status", headers={"Authorization": f"Bearer {CI_KEY}"})
                health = await tcp.get("/healthz")
                await keyed.read()
    assert anonymous.status == 401
    assert wrong.status == 401
    assert keyed.status == 200
    assert admin.status == 403
    assert health.status == 200
    assert finished_clients(log_lines) == ["ci-bot"]


async def test_tcp_listener_is_off_by_default(tmp_path: Path) -> None:
    async with serve_app(tmp_path, cloud_config("http://127.0.0.1:9/v1")) as env:
        config = env.runtime.graph.loaded.config
        site = await listen_tcp(env.runner, config.server, config.clients)
    assert site is None


async def test_tcp_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config_text = cloud_config("http://127.0.0.1:9/v1", server=server(tcp={"host": "127.0.0.1", "port": port}))
        async with serve_app(tmp_path, config_text) as env:
            config = env.runtime.graph.loaded.config
            with pytest.raises(ListenerError, match=f"127.0.0.1:{port}"):
                await listen_tcp(env.runner, config.server, config.clients)


# The socket's mode and group.


async def test_socket_gets_mode_and_group(tmp_path: Path) -> None:
    group = existing_group()
    settings = ServerConfig(socket_mode="0660", socket_group=group.gr_name)
    path = Path(f"/tmp/sb-group-{os.getpid()}.sock")
    runner = web.AppRunner(web.Application())
    await runner.setup()
    try:
        await listen_unix(runner, path, settings)
        info = path.stat()
    finally:
        await runner.cleanup()
        path.unlink(missing_ok=True)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == group.gr_gid


def test_unknown_socket_group_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.touch()
    with pytest.raises(ListenerError, match='socket_group "no-such-group-sb" is not a group'):
        apply_group(path, "no-such-group-sb", "0660")


def test_group_with_private_mode_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "plain-file"
    path.touch()
    with caplog.at_level(logging.WARNING):
        apply_group(path, existing_group().gr_name, "0600")
    assert 'use socket_mode "0660"' in caplog.text


# The real daemon.


def test_daemon_rejects_uid_outside_allowlist(spawn_daemon: SpawnDaemon) -> None:
    not_me = os.getuid() + 1
    daemon = spawn_daemon(cloud_config("http://127.0.0.1:9/v1", server=server(allow_uids=[not_me])))
    with daemon.http() as http:
        response = http.post("/v1/chat/completions", json=chat_body())
        health = http.get("/healthz")
    daemon.stop()
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert health.status_code == 200
    assert f"uid {os.getuid()} " in daemon.log()
