"""Open the daemon's listeners: the Unix socket (mode and group) and an optional TCP port.

Both read `server:` once, at start; changing the socket, its mode or group, or `server.tcp`
takes a restart, because a reload keeps the open listeners.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import stat
from pathlib import Path

from aiohttp import web

from sage_bridge.config.schema import ClientConfig, ServerConfig
from sage_bridge.server.unix_socket import apply_mode, prepare_socket_path

log = logging.getLogger(__name__)


class ListenerError(RuntimeError):
    """A listener cannot be opened as configured; the message names the setting and the fix."""


async def listen_unix(runner: web.AppRunner, path: Path, server: ServerConfig) -> web.UnixSite:
    """Serve `runner` on the socket at `path` with `server.socket_mode` and `server.socket_group`."""
    prepare_socket_path(path)
    # The umask keeps the socket private from the moment it exists, before chmod sets the mode.
    previous = os.umask(0o177)
    try:
        site = web.UnixSite(runner, str(path))
        await site.start()
    finally:
        os.umask(previous)
    if server.socket_group is not None:
        apply_group(path, server.socket_group, server.socket_mode)
    apply_mode(path, server.socket_mode)
    return site


def apply_group(path: Path, group: str, mode: str) -> None:
    """Give the socket to `group`, and warn when the mode or the directories keep the group out."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenerError(f'server.socket_group "{group}" is not a group on this machine; create it, '
                            "or remove socket_group from bridge.yaml") from None
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        raise ListenerError(f'cannot give {path} to group "{group}": the daemon\'s user must be a member of it; '
                            "add the user to the group, or remove socket_group from bridge.yaml") from None
    if int(mode, 8) & 0o060 != 0o060:
        log.warning('server.socket_group is "%s" but socket_mode %s gives the group no read and write access; '
                    'use socket_mode "0660"', group, mode)
    blocked = _closed_directory(path.parent, gid)
    if blocked is not None:
        log.warning('members of group "%s" cannot reach %s because directory %s does not let them in; '
                    "serve the socket from a directory that group can search (for example mode 0750 with that group)",
                    group, path, blocked)


def _closed_directory(directory: Path, gid: int) -> Path | None:
    """Return the first directory on the way to the socket that the group cannot search."""
    for current in (directory, *directory.parents):
        info = current.stat()
        allowed = stat.S_IXGRP if info.st_gid == gid else stat.S_IXOTH
        if not info.st_mode & allowed:
            return current
    return None


async def listen_tcp(runner: web.AppRunner, server: ServerConfig, clients: dict[str, ClientConfig]) -> web.TCPSite | None:
    """Serve `runner` on `server.tcp` when it is set; every request there needs a client key."""
    tcp = server.tcp
    if tcp is None:
        return None
    if not any(client.key_sha256 for client in clients.values()):
        log.warning("server.tcp is set but no client has a key_sha256, so every request on %s:%d will be rejected",
                    tcp.host, tcp.port)
    if not _is_loopback(tcp.host):
        log.warning("serving TCP on %s:%d, beyond this machine: client keys cross the network in plain text; "
                    "put a TLS proxy in front, or listen on 127.0.0.1", tcp.host, tcp.port)
    site = web.TCPSite(runner, tcp.host, tcp.port)
    try:
        await site.start()
    except OSError as exc:
        raise ListenerError(f"cannot listen on TCP {tcp.host}:{tcp.port} (server.tcp): {exc.strerror}; "
                            "choose another port, or stop the process that holds it") from None
    log.info("serving on TCP %s:%d as well; requests there need a client key", tcp.host, tcp.port)
    return site


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
