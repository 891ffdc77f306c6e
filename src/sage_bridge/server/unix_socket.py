"""Prepare the Unix socket path: a private directory, and no clash with a running daemon."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path

log = logging.getLogger(__name__)


class SocketInUse(RuntimeError):
    """Another process is accepting connections on the socket path."""


def prepare_socket_path(path: Path) -> None:
    """Create the socket's directory (mode 0700 when we create it) and clear a stale socket file.

    A socket file that accepts connections belongs to a live daemon: raise SocketInUse. One that
    refuses them is left over from a daemon that died, so it is removed.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; remove it or choose another --socket")
    if _accepts_connections(path):
        raise SocketInUse(
            f"another bridged is already serving on {path}; stop it first, or start this one with another --socket"
        )
    log.info("removing stale socket file %s left by a daemon that is no longer running", path)
    path.unlink()


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
    return True


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def apply_mode(path: Path, mode: str) -> None:
    os.chmod(path, int(mode, 8))
