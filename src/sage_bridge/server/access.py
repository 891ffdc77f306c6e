"""Decide who may call the bridge: client keys, the uid and group allowlist, and admin access.

A caller on the Unix socket is identified by its uid (SO_PEERCRED). When it sends a bearer key
that matches a client under `clients:`, it is that client instead. The official OpenAI SDKs send
`Authorization: Bearer <api_key>` on every request, usually with a placeholder, so on the socket
a key that matches no client is ignored unless `server.require_client_key` is true. A caller on
the TCP listener has no uid and must always send a client key.
"""

from __future__ import annotations

import functools
import grp
import hashlib
import hmac
import logging
import os
import pwd
from collections.abc import Iterable, Mapping

from sage_bridge.config.schema import BridgeConfig, ClientConfig, ServerConfig
from sage_bridge.errors import Forbidden, RequestError
from sage_bridge.server.identity import Caller, PeerCredentials

log = logging.getLogger(__name__)

ROOT_UID = 0
ADMIN_PREFIX = "/admin/"
OPEN_PATHS = frozenset({"/healthz"})  # served to anyone who can connect: it reveals only "ok"


class Unauthorized(RequestError):
    """Raised when a request needs a client key and carries none, or one that matches no client."""

    status = 401
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="sage-bridge"'}


class AccessPolicy:
    """The access rules of one config. Build a new one when the config changes."""

    def __init__(self, server: ServerConfig, clients: Mapping[str, ClientConfig], daemon_uid: int | None = None) -> None:
        self.require_client_key = server.require_client_key
        self._keys = {name: client.key_sha256 for name, client in clients.items() if client.key_sha256}
        self._allow_uids = frozenset(server.allow_uids or ())
        self._allow_gids = _group_ids(server.allow_groups or (), "server.allow_groups")
        self._restricted = server.allow_uids is not None or server.allow_groups is not None
        own_uid = os.getuid() if daemon_uid is None else daemon_uid
        # The daemon's own user and root can read its config and signal it anyway, so denying
        # them the admin API would protect nothing.
        self._admin_uids = frozenset({own_uid, ROOT_UID, *server.admin.uids})
        self._admin_gids = _group_ids(server.admin.groups, "server.admin.groups")
        self._admin_clients = frozenset(server.admin.clients)
        _supplementary_groups.cache_clear()  # a reload picks up changed group memberships
        for name in sorted(self._admin_clients - self._keys.keys()):
            log.warning('server.admin.clients names "%s", which is not a client with a key_sha256; it is ignored', name)

    def admit(self, path: str, credentials: PeerCredentials | None, authorization: str | None) -> Caller:
        """Return the caller of a request to `path`, or raise Unauthorized or Forbidden."""
        open_path = path in OPEN_PATHS
        client = self._client_for(authorization, credentials, enforce=not open_path)
        if client is not None:
            caller = Caller(client, credentials, client)
        elif credentials is not None:
            caller = Caller(f"uid:{credentials.uid}", credentials)
        else:
            caller = Caller("anonymous", None)
        if open_path:
            return caller

        if client is None:
            self._check_allowlist(credentials)
        if path.startswith(ADMIN_PREFIX):
            self._check_admin(caller)
        return caller

    def _client_for(self, authorization: str | None, credentials: PeerCredentials | None, enforce: bool) -> str | None:
        key_needed = enforce and (credentials is None or self.require_client_key)
        key = _bearer(authorization)
        if key is None:
            if key_needed:
                raise Unauthorized(
                    "this endpoint needs a client key: send 'Authorization: Bearer <key>' with a key whose "
                    "SHA-256 digest is a key_sha256 under clients: in bridge.yaml"
                )
            return None
        client = self._match(key)
        if client is not None:
            return client
        if key_needed:
            raise Unauthorized(
                "the bearer key matches no client in bridge.yaml; check the key, or add its SHA-256 digest "
                "as key_sha256 of a client under clients:"
            )
        log.debug("the bearer key matches no client; identifying the caller by its uid")
        return None

    def _match(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        found = None
        # Compare with every client, in constant time each, so timing does not tell which digest is near.
        for name, expected in self._keys.items():
            if hmac.compare_digest(digest, expected):
                found = name
        return found

    def _check_allowlist(self, credentials: PeerCredentials | None) -> None:
        if not self._restricted or credentials is None:
            return
        if credentials.uid in self._allow_uids or _in_groups(credentials, self._allow_gids):
            return
        log.warning("uid %d (gid %d, pid %d) is not in server.allow_uids or server.allow_groups; rejected",
                    credentials.uid, credentials.gid, credentials.pid)
        raise Forbidden(
            f"uid {credentials.uid} is not allowed to use this bridge; its operator can add the uid to "
            "server.allow_uids, or one of its groups to server.allow_groups, or give it a client key"
        )

    def _check_admin(self, caller: Caller) -> None:
        credentials = caller.credentials
        if caller.client is not None and caller.client in self._admin_clients:
            return
        if credentials is not None and (credentials.uid in self._admin_uids or _in_groups(credentials, self._admin_gids)):
            return
        caller_name = f"uid {credentials.uid}" if credentials is not None else f'client "{caller.identity}"'
        log.warning("%s requested the admin API and is not in server.admin; rejected", caller_name)
        raise Forbidden(
            f"{caller_name} may not use the admin API; it is open to the daemon's own user, root, and the uids, "
            "groups and clients listed under server.admin in bridge.yaml"
        )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _group_ids(names: Iterable[str], setting: str) -> frozenset[int]:
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            log.warning('%s names group "%s", which does not exist on this machine; it matches no one', setting, name)
    return frozenset(gids)


def _in_groups(credentials: PeerCredentials, gids: frozenset[int]) -> bool:
    if not gids:
        return False
    return credentials.gid in gids or not gids.isdisjoint(_supplementary_groups(credentials.uid, credentials.gid))


@functools.lru_cache(maxsize=256)
def _supplementary_groups(uid: int, gid: int) -> frozenset[int]:
    # SO_PEERCRED carries only the primary gid, so the other groups come from the user database.
    # NOTE: cached until the next config load; a user added to a group is seen after a reload.
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return frozenset()
    return frozenset(os.getgrouplist(name, gid))


class AccessGate:
    """The AccessPolicy of the config being served, rebuilt when a reload swaps the config."""

    def __init__(self) -> None:
        self._config: BridgeConfig | None = None
        self._policy: AccessPolicy | None = None

    def policy(self, config: BridgeConfig) -> AccessPolicy:
        if self._policy is None or config is not self._config:
            self._policy = AccessPolicy(config.server, config.clients)
            self._config = config
        return self._policy
