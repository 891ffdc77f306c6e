"""A registry of secret values (API keys, client keys) and redaction of them from text.

Every key the config resolves is registered here, so that error messages, log lines and admin
responses can be scrubbed even when an upstream echoes a key back in its error body.
"""

from __future__ import annotations

import threading

MASK = "[REDACTED]"
_MIN_SECRET_LENGTH = 6  # shorter values ("none", "x") would mask ordinary words

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def register_secret(value: str | None) -> None:
    """Add a secret value so that `redact` masks it from now on."""
    global _secrets
    if value is None or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets = _secrets | {value}


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by a mask."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
