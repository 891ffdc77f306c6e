"""The ledger: one SQLite row per request, written by one thread with group commit.

`await ledger.record(row)` queues the row and returns once the transaction holding it has
committed, so a response sent after it is already on disk and a killed daemon loses no finished
request. The writer thread takes every row queued while it was busy and commits them together in
one transaction, which keeps the number of fsyncs low under load and off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from sage_bridge.accounting.cost import format_usd
from sage_bridge.accounting.ledger_queries import GroupBy, LedgerError, LedgerReader, UsageLine, format_time
from sage_bridge.accounting.migrations import migrate
from sage_bridge.accounting.spend import SpendEvent, SpendTotal

logger = logging.getLogger(__name__)

LEDGER_FILE_NAME = "ledger.sqlite3"

Outcome = Literal["ok", "error", "rejected", "cancelled"]
Endpoint = Literal["chat", "embeddings"]
_OUTCOMES = ("ok", "error", "rejected", "cancelled")
_ENDPOINTS = ("chat", "embeddings")

_INSERT = """
    INSERT INTO requests (
        time, request_id, endpoint, client, route, deployment, provider, upstream_model,
        prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_usd,
        cost_unknown, estimated, latency_ms, ttft_ms, attempts, outcome, error_kind
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRow:
    """The record of one request: route, tokens, cost and outcome. `time` is when it finished."""

    time: datetime
    request_id: str
    client: str
    outcome: Outcome
    cost_usd: Decimal | None  # None: the deployment is unpriced, so the cost is unknown
    endpoint: Endpoint = "chat"
    route: str | None = None
    deployment: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False  # tokens were counted locally because the provider sent no usage
    latency_ms: float | None = None
    ttft_ms: float | None = None  # time to the first streamed token
    attempts: int = 0
    error_kind: str | None = None

    @property
    def cost_unknown(self) -> bool:
        return self.cost_usd is None


@dataclass(slots=True)
class LedgerStats:
    """Counters for metrics; written by the writer thread only."""

    rows: int = 0  # rows committed
    commits: int = 0  # transactions committed; rows / commits is the mean group size
    failed_rows: int = 0


@dataclass(slots=True)
class _Pending:
    values: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


_STOP = object()


class Ledger:
    """The ledger file at `path`; call open() before record() and close() at shutdown."""

    def __init__(self, path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "FULL", max_batch: int = 512) -> None:
        # FULL syncs the WAL on every commit, so even a power cut loses no committed row;
        # NORMAL survives a killed process but not a power cut.
        self.path = path
        self.reader = LedgerReader(path)
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Rows handed to the writer, and rows it has finished (committed or failed). Only
        # submit() raises the first and only the writer thread the second, so submit() takes
        # no lock. flush() waits on the condition until the two are equal.
        self._queued = 0
        self._finished = 0
        self._idle = threading.Condition()
        self.stats = LedgerStats()

    @classmethod
    def in_state_dir(cls, state_dir: Path, **options: Any) -> Ledger:
        return cls(state_dir / LEDGER_FILE_NAME, **options)

    def open(self) -> None:
        """Create or migrate the database and start the writer thread."""
        if self._thread is not None or self._closed:
            raise RuntimeError("the ledger was already opened; build a new Ledger to open it again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        try:
            migrate(connection)
        except BaseException:
            connection.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(connection,), name="ledger-writer", daemon=True)
        self._thread.start()
        logger.info("ledger open at %s", self.path)

    async def record(self, row: LedgerRow) -> None:
        """Write one row; return when its transaction has committed.

        If the caller is cancelled while waiting, the row is still written.
        """
        await self.submit(row)

    def submit(self, row: LedgerRow) -> asyncio.Future[None]:
        """Queue one row for the writer; the returned future completes when it has committed."""
        if self._thread is None or self._closed:
            raise RuntimeError("the ledger is not open; call open() first, and record nothing after close()")
        values = _row_values(row)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queued += 1
        self._queue.put(_Pending(values, loop, done))
        return done

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued row has been committed or has failed.

        Blocking is brief: the writer thread needs nothing from the caller's thread to finish.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: self._finished == self._queued, timeout):
                waiting = self._queued - self._finished
                raise TimeoutError(f"{waiting} ledger rows were still queued after {timeout} s")

    async def close(self) -> None:
        """Commit every queued row, then stop the writer thread. Calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        logger.info("ledger closed at %s", self.path)

    # Spend history for budgets (spend.SpendHistory). Queued rows are flushed first, so a budget
    # rebuilt now includes every request already settled.
    def spend_since(self, scope: str, since: datetime) -> SpendTotal:
        self.flush()
        return self.reader.spend_since(scope, since)

    def spend_events_since(self, scope: str, since: datetime) -> list[SpendEvent]:
        self.flush()
        return self.reader.spend_events_since(scope, since)

    async def usage_report(
        self, group_by: GroupBy, start: datetime, end: datetime, timezone: str = "UTC"
    ) -> list[UsageLine]:
        """Run LedgerReader.usage_report on a worker thread."""
        return await asyncio.to_thread(self.reader.usage_report, group_by, start, end, timezone)

    def _connect(self) -> sqlite3.Connection:
        try:
            # The writer thread takes this connection over; nothing else uses it afterwards.
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}; check the state directory") from exc
        if mode != "wal":
            connection.close()
            raise LedgerError(f"the ledger {self.path} cannot use WAL mode (journal_mode is {mode})")
        return connection

    def _run(self, connection: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take_batch()
            if not batch:
                continue
            try:
                self._commit(connection, batch)
            except Exception as exc:  # keep the thread alive, or every later record() would hang
                logger.exception("ledger writer failed on %d rows", len(batch))
                self._fail(batch, LedgerError(f"ledger write to {self.path} failed: {exc}"))
        connection.close()

    def _take_batch(self) -> tuple[list[_Pending], bool]:
        # Block for the first row, then take whatever else is already queued.
        batch: list[_Pending] = []
        item = self._queue.get()
        while True:
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Pending)
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(self, connection: sqlite3.Connection, batch: list[_Pending]) -> None:
        try:
            _insert(connection, [pending.values for pending in batch])
            self.stats.commits += 1
            failures: list[BaseException | None] = [None] * len(batch)
        except sqlite3.Error as exc:
            # One bad row must not lose the others: retry each in its own transaction.
            logger.warning("ledger batch of %d rows failed (%s); writing the rows one at a time", len(batch), exc)
            failures = [self._commit_one(connection, pending) for pending in batch]
        self._finish(batch, failures)

    def _fail(self, batch: list[_Pending], error: LedgerError) -> None:
        self._finish(batch, [error] * len(batch))

    def _finish(self, batch: list[_Pending], failures: list[BaseException | None]) -> None:
        failed = sum(1 for failure in failures if failure is not None)
        self.stats.rows += len(batch) - failed
        self.stats.failed_rows += failed
        with self._idle:
            self._finished += len(batch)
            self._idle.notify_all()
        _resolve(list(zip(batch, failures, strict=True)))

    def _commit_one(self, connection: sqlite3.Connection, pending: _Pending) -> BaseException | None:
        try:
            _insert(connection, [pending.values])
        except sqlite3.Error as exc:
            request_id = pending.values[1]
            logger.error("ledger write of request %s to %s failed: %s", request_id, self.path, exc)
            error = LedgerError(f"ledger write of request {request_id} to {self.path} failed: {exc}")
            error.__cause__ = exc
            return error
        self.stats.commits += 1
        return None


def _insert(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(_INSERT, rows)
        connection.execute("COMMIT")
    except sqlite3.Error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _resolve(outcomes: list[tuple[_Pending, BaseException | None]]) -> None:
    """Settle the callers' futures, waking each event loop once per batch rather than once per row."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, BaseException | None]]] = {}
    for pending, failure in outcomes:
        by_loop.setdefault(pending.loop, []).append((pending, failure))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_futures, settled)
        except RuntimeError:
            logger.debug("event loop closed before %d ledger rows were acknowledged", len(settled))


def _settle_futures(outcomes: list[tuple[_Pending, BaseException | None]]) -> None:
    for pending, failure in outcomes:
        if pending.done.done():  # the caller was cancelled; the row is written regardless
            continue
        if failure is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(failure)


def _row_values(row: LedgerRow) -> tuple[Any, ...]:
    # Checked here, on the caller's side, so a bad row fails its own record() call.
    if row.outcome not in _OUTCOMES:
        raise ValueError(f'ledger outcome "{row.outcome}" is not valid; use one of {", ".join(_OUTCOMES)}')
    if row.endpoint not in _ENDPOINTS:
        raise ValueError(f'ledger endpoint "{row.endpoint}" is not valid; use one of {", ".join(_ENDPOINTS)}')
    return (
        format_time(row.time),
        row.request_id,
        row.endpoint,
        row.client,
        row.route,
        row.deployment,
        row.provider,
        row.upstream_model,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_tokens,
        row.cache_write_tokens,
        None if row.cost_usd is None else format_usd(row.cost_usd),
        int(row.cost_unknown),
        int(row.estimated),
        row.latency_ms,
        row.ttft_ms,
        row.attempts,
        row.outcome,
        row.error_kind,
    )
