"""Logging set-up for the daemon: one format, secrets redacted from every line."""

from __future__ import annotations

import logging

from sage_bridge.secrets import redact

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Mask every registered secret in a record's final message, whatever put it there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for handler in root.handlers for f in handler.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(RedactingFilter())
        root.handlers = [handler]
    root.setLevel(level.upper())
    # Third-party libraries stay at WARNING unless the operator asks for DEBUG everywhere.
    for noisy in ("aiohttp.access", "httpx", "httpx2", "openai", "anthropic", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
