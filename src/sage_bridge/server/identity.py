"""Identify the caller: the peer's uid and gid from the Unix socket (SO_PEERCRED)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from aiohttp import web

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(request: web.Request) -> PeerCredentials | None:
    """Return the connecting process's credentials, or None when the transport is not a Unix socket."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


def client_identity(request: web.Request) -> str:
    credentials = peer_credentials(request)
    return f"uid:{credentials.uid}" if credentials is not None else "anonymous"
