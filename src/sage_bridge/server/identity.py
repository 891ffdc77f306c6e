"""Identify the caller: the peer's uid and gid from the Unix socket (SO_PEERCRED)."""

from __future__ import annotations

import asyncio
import socket
import struct
import weakref
from dataclasses import dataclass

from aiohttp import web

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Caller:
    """The sender of a request, as the access check identified it."""

    identity: str  # a client's name when its key matched, else "uid:N", else "anonymous"
    credentials: PeerCredentials | None  # None on a TCP connection
    client: str | None = None  # the name under `clients:` whose key the request carried

    @property
    def uid(self) -> int | None:
        return self.credentials.uid if self.credentials is not None else None


CALLER = web.RequestKey("caller", Caller)  # set by the access check on every request

# SO_PEERCRED reports the credentials the peer had when it connected, so one lookup serves
# every request on a keep-alive connection.
_by_transport: weakref.WeakKeyDictionary[asyncio.BaseTransport, PeerCredentials | None] = weakref.WeakKeyDictionary()


def peer_credentials(request: web.Request) -> PeerCredentials | None:
    """Return the connecting process's credentials, or None when the transport is not a Unix socket."""
    transport = request.transport
    if transport is None:
        return None
    try:
        return _by_transport[transport]
    except KeyError:
        credentials = _by_transport[transport] = _read_credentials(transport)
        return credentials


def _read_credentials(transport: asyncio.BaseTransport) -> PeerCredentials | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


def client_identity(request: web.Request) -> str:
    """Return the identity budgets, limits and the ledger see: a client name or "uid:N"."""
    if CALLER in request:
        return request[CALLER].identity
    credentials = peer_credentials(request)
    return f"uid:{credentials.uid}" if credentials is not None else "anonymous"
