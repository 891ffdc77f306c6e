"""Logging set-up for the daemon: text or JSON lines, request ids, redaction, repeat suppression.

Every handler the daemon installs carries three filters, in this order:
RequestIdFilter (adds the current request id), RepeatFilter (rate-limits identical warnings)
and RedactingFilter (masks registered secrets). The formatters redact their final output again,
so a secret inside a traceback or an `extra` field is masked too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from sage_bridge.secrets import redact

LogFormat = Literal["text", "json"]

# The id of the request whose code is running; "-" outside any request.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("sage_bridge_request_id", default="-")

NO_REQUEST = "-"
REPEAT_INTERVAL = 10.0  # seconds between two lines of the same repeated warning

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # logging's default; the milliseconds follow after a comma
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
_NOISY_LIBRARIES = ("aiohttp.access", "httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic", "cohere",
                    "watchfiles")
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "request_id", "request_tag",
}


class RequestIdFilter(logging.Filter):
    """Add `record.request_id`: the id of the request being served, or "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RedactingFilter(logging.Filter):
    """Mask every registered secret in a record's final message, whatever put it there."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The formatted text replaces the template, so the formatter does not format it again.
        record.msg, record.args = redact(record.getMessage()), None
        return True


class RepeatFilter(logging.Filter):
    """Let one of a run of identical warnings through per interval, and count the rest.

    Records are identical when they come from the same logger with the same message template,
    so a flood of "deployment %s failed" lines about many requests becomes one line every
    `interval` seconds that reports how many were suppressed. A template made only of
    placeholders ("%s") says nothing by itself, so its formatted text is the key instead.
    Records below `level` always pass, which keeps the one INFO line per request.
    """

    _MAX_KEYS = 10_000  # a bound on memory if some caller builds templates at run time

    def __init__(self, interval: float = REPEAT_INTERVAL, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self._clock = clock
        self._last_passed: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, _template_key(record))
        now = self._clock()
        last = self._last_passed.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False

        if len(self._last_passed) >= self._MAX_KEYS:
            self._last_passed.clear()
            self._suppressed.clear()
        self._last_passed[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed and last is not None:
            noun = "message" if suppressed == 1 else "messages"
            record.msg = f"{record.getMessage()} ({suppressed} similar {noun} suppressed in the last {now - last:.0f} s)"
            record.args = None
        return True


def _template_key(record: logging.LogRecord) -> str:
    template = str(record.msg)
    if not template.replace("%s", "").replace("%r", "").strip():
        return record.getMessage()
    return template


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, [request id], message."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        # Most lines fall in the same second as the previous one, so its text is reused.
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime(_TIME_FORMAT, self.converter(second))
        return f"{self._second_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", NO_REQUEST)
        record.request_tag = "" if request_id == NO_REQUEST else f" [{request_id}]"
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", NO_REQUEST)
        if request_id != NO_REQUEST:
            entry["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(_redact_values(entry), ensure_ascii=False, default=str))


def _redact_values(entry: dict[str, Any]) -> dict[str, Any]:
    # Redact before json.dumps as well: escaping could split a secret that contains a quote
    # or a backslash, and then the redaction of the final line would miss it.
    return {name: redact(value) if isinstance(value, str) else value for name, value in entry.items()}


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the INFO and DEBUG lines of one event-loop pass at once.

    On the event loop's thread such lines wait in a buffer. A callback scheduled behind the
    running ones writes the buffer in one call, so a request's line goes out after its response
    and a busy loop makes one write for many requests. WARNING and above, lines from other
    threads and lines outside a loop are written at once. A SIGKILL loses at most the lines
    of the pass it interrupts.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        loop = _running_loop()
        if loop is None or record.levelno >= logging.WARNING:
            self._write_buffered()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._write_scheduled)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_buffered()
            super().flush()

    def _write_scheduled(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            self._write_buffered()

    def _write_buffered(self) -> None:
        if not self._lines:
            return
        text, self._lines = "".join(self._lines), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # as logging.StreamHandler does: a broken stream must not break the caller
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def build_handler(fmt: LogFormat | str = "text", stream: Any = None) -> logging.Handler:
    """Return a stream handler (stderr by default) with the daemon's filters and formatter.

    `fmt` "json" writes JSON lines; any other value writes text.
    """
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter())
    return handler


def _skip_unused_record_fields() -> None:
    """Stop logging from looking up what neither format prints: the caller's file and line,
    the thread, the process and the asyncio task. The logging HOWTO's "Optimization" section
    lists these switches; together they took about a sixth of a request line's CPU."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # the stubs lack this Python 3.12 switch


def configure_logging(level: str, fmt: LogFormat | str = "text") -> None:
    """Send every log record to stderr at `level`, as text or as JSON lines (`fmt` "json").

    Call it again to change either; the previous handler is replaced.
    """
    _skip_unused_record_fields()
    root = logging.getLogger()
    root.handlers = [build_handler(fmt)]
    root.setLevel(level.upper())
    # Third-party libraries stay at WARNING unless the operator asks for DEBUG everywhere.
    library_level = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for noisy in _NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(library_level)
