"""The SQLite ledger: durable group-committed writes, migrations and spend queries."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sage_bridge.accounting.ledger import LEDGER_FILE_NAME, Ledger, LedgerRow
from sage_bridge.accounting.ledger_queries import LedgerError, LedgerReader
from sage_bridge.accounting.migrations import LEDGER_MIGRATIONS, Migration, MigrationError, migrate, schema_version

T0 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


def _row(request_id: str = "r1", **overrides: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "time": T0,
        "request_id": request_id,
        "client": "uid:1000",
        "outcome": "ok",
        "cost_usd": Decimal("0.005615"),
        "route": "default",
        "deployment": "gpt-4o",
        "provider": "openai",
        "upstream_model": "gpt-4o",
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "cached_tokens": 1920,
        "latency_ms": 812.5,
        "ttft_ms": 120.0,
        "attempts": 1,
    }
    values.update(overrides)
    return LedgerRow(**values)


def _select(path: Path, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query, parameters).fetchall()
    finally:
        connection.close()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = Ledger.in_state_dir(tmp_path / "state")
    ledger.open()
    yield ledger
    await ledger.close()


# --- opening and the schema ---


async def test_open_creates_wal_database(ledger: Ledger) -> None:
    assert ledger.path.name == LEDGER_FILE_NAME
    assert _select(ledger.path, "PRAGMA journal_mode") == [("wal",)]
    assert _select(ledger.path, "PRAGMA user_version") == [(len(LEDGER_MIGRATIONS),)]


async def test_reopen_keeps_rows(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "ledger.sqlite3")
    first.open()
    await first.record(_row())
    await first.close()
    second = Ledger(tmp_path / "ledger.sqlite3")
    second.open()
    await second.record(_row("r2"))
    await second.close()
    assert _select(second.path, "SELECT request_id FROM requests ORDER BY id") == [("r1",), ("r2",)]


def test_newer_schema_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _select(path, f"PRAGMA user_version = {len(LEDGER_MIGRATIONS) + 1}")
    with pytest.raises(MigrationError, match="newer"):
        Ledger(path).open()


def test_migrations_apply_in_order(tmp_path: Path) -> None:
    steps = (
        Migration(1, "create t", ("CREATE TABLE t (a INTEGER)",)),
        Migration(2, "add b", ("ALTER TABLE t ADD COLUMN b TEXT",)),
    )
    connection = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    assert migrate(connection, steps[:1]) == 1
    assert migrate(connection, steps) == 2
    columns = [row[1] for row in connection.execute("PRAGMA table_info(t)")]
    connection.close()
    assert columns == ["a", "b"]


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    steps = (
        Migration(1, "create t", ("CREATE TABLE t (a INTEGER)",)),
        Migration(2, "broken", ("CREATE TABLE u (a INTEGER)", "ALTER TABLE missing ADD COLUMN b")),
    )
    connection = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    with pytest.raises(MigrationError, match="broken"):
        migrate(connection, steps)
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    version = schema_version(connection)
    connection.close()
    assert version == 1
    assert tables == ["t"]


def test_migration_versions_must_count_up(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    with pytest.raises(MigrationError, match="expected 1"):
        migrate(connection, (Migration(2, "skips one", ("SELECT 1",)),))
    connection.close()


# --- writing rows ---


async def test_record_is_committed_on_return(ledger: Ledger) -> None:
    await ledger.record(_row())
    rows = _select(
        ledger.path,
        "SELECT time, request_id, endpoint, cost_usd, cost_unknown, estimated, prompt_tokens, "
        "cached_tokens, outcome, latency_ms FROM requests",
    )
    assert rows == [("2026-03-28T12:00:00.000000Z", "r1", "chat", "0.005615", 0, 0, 2006, 1920, "ok", 812.5)]


async def test_unpriced_row_has_null_cost(ledger: Ledger) -> None:
    await ledger.record(_row(cost_usd=None, estimated=True))
    assert _select(ledger.path, "SELECT cost_usd, cost_unknown, estimated FROM requests") == [(None, 1, 1)]


async def test_error_row_keeps_error_kind(ledger: Ledger) -> None:
    await ledger.record(_row(outcome="error", error_kind="rate_limited", cost_usd=Decimal(0), attempts=3))
    assert _select(ledger.path, "SELECT outcome, error_kind, attempts, cost_usd FROM requests") == [
        ("error", "rate_limited", 3, "0")
    ]


async def test_invalid_outcome_rejected_before_queueing(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="outcome"):
        await ledger.record(_row(outcome="done"))
    assert _select(ledger.path, "SELECT COUNT(*) FROM requests") == [(0,)]


async def test_naive_time_rejected(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="naive"):
        await ledger.record(_row(time=datetime(2026, 1, 1)))


async def test_concurrent_records_share_transactions(ledger: Ledger) -> None:
    # Hold the write lock so rows pile up in the queue, then let the writer take them at once.
    blocker = sqlite3.connect(ledger.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    tasks = [asyncio.create_task(ledger.record(_row(f"r{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.gather(*tasks)
    assert ledger.stats.rows == 50
    assert ledger.stats.commits <= 2
    assert _select(ledger.path, "SELECT COUNT(DISTINCT request_id) FROM requests") == [(50,)]


async def test_cancelled_record_is_still_written(ledger: Ledger) -> None:
    task = asyncio.create_task(ledger.record(_row("cancelled-caller")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ledger.flush(timeout=10)
    assert _select(ledger.path, "SELECT request_id FROM requests") == [("cancelled-caller",)]


async def test_close_flushes_queued_rows(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.open()
    tasks = [asyncio.create_task(ledger.record(_row(f"r{i}"))) for i in range(20)]
    await asyncio.sleep(0)
    await ledger.close()
    await asyncio.gather(*tasks)
    assert _select(ledger.path, "SELECT COUNT(*) FROM requests") == [(20,)]


async def test_record_after_close_raises(ledger: Ledger) -> None:
    await ledger.close()
    with pytest.raises(RuntimeError, match="not open"):
        await ledger.record(_row())


async def test_record_before_open_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await Ledger(tmp_path / "ledger.sqlite3").record(_row())


def test_killed_process_keeps_recorded_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from datetime import UTC, datetime
        from decimal import Decimal
        from pathlib import Path
        from sage_bridge.accounting.ledger import Ledger, LedgerRow

        async def main():
            ledger = Ledger(Path({str(path)!r}))
            ledger.open()
            for i in range(25):
                await ledger.record(LedgerRow(time=datetime.now(UTC), request_id=f"r{{i}}",
                    client="c", outcome="ok", cost_usd=Decimal("0.001")))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == -9
    assert _select(path, "SELECT COUNT(*) FROM requests") == [(25,)]


# --- reading spend ---


async def _record_mix(ledger: Ledger) -> None:
    rows = [
        _row("a1", route="a", client="x", cost_usd=Decimal("0.1"), prompt_tokens=10, completion_tokens=5),
        _row("a2", route="a", client="y", cost_usd=Decimal("0.2"), prompt_tokens=20, completion_tokens=5),
        _row("b1", route="b", client="x", cost_usd=None, prompt_tokens=7, completion_tokens=3),
        _row("old", route="a", client="x", cost_usd=Decimal(5), time=T0 - timedelta(days=2)),
        _row("late", route="b", client="y", cost_usd=Decimal("0.0000000375"), time=T0 + timedelta(hours=11, minutes=30)),
    ]
    for row in rows:
        await ledger.record(row)


async def test_spend_since_global(ledger: Ledger) -> None:
    await _record_mix(ledger)
    total = ledger.spend_since("global", T0)
    assert total.usd == Decimal("0.3000000375")
    assert total.tokens == 10 + 5 + 20 + 5 + 7 + 3 + 2006 + 300
    assert total.requests == 4
    assert total.unknown_cost_requests == 1


async def test_spend_since_per_scope(ledger: Ledger) -> None:
    await _record_mix(ledger)
    assert ledger.spend_since("route:a", T0).usd == Decimal("0.3")
    assert ledger.spend_since("route:a", T0 - timedelta(days=3)).usd == Decimal("5.3")
    assert ledger.spend_since("client:x", T0).usd == Decimal("0.1")
    assert ledger.spend_since("client:x", T0).unknown_cost_requests == 1
    assert ledger.spend_since("deployment:gpt-4o", T0).requests == 4
    assert ledger.spend_since("provider:anthropic", T0).usd == 0


async def test_spend_since_empty_is_zero(ledger: Ledger) -> None:
    total = ledger.spend_since("global", T0)
    assert total.usd == 0
    assert total.tokens == 0
    assert total.requests == 0


async def test_spend_until_excludes_end(ledger: Ledger) -> None:
    await _record_mix(ledger)
    total = ledger.reader.spend_since("global", T0, until=T0 + timedelta(hours=1))
    assert total.requests == 3


async def test_spend_events_oldest_first(ledger: Ledger) -> None:
    await _record_mix(ledger)
    events = ledger.spend_events_since("route:b", T0 - timedelta(days=3))
    assert [event.usd for event in events] == [Decimal(0), Decimal("0.0000000375")]
    assert [event.tokens for event in events] == [10, 2306]
    assert events[1].time == T0 + timedelta(hours=11, minutes=30)


async def test_invalid_scope_rejected(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="scope"):
        ledger.spend_since("team:a", T0)


# --- usage reports ---


async def test_report_by_route(ledger: Ledger) -> None:
    await _record_mix(ledger)
    lines = await ledger.usage_report("route", T0, T0 + timedelta(days=1))
    by_key = {line.key: line for line in lines}
    assert set(by_key) == {"a", "b"}
    assert by_key["a"].requests == 2
    assert by_key["a"].cost_usd == Decimal("0.3")
    assert by_key["b"].cost_usd == Decimal("0.0000000375")
    assert by_key["b"].unknown_cost_requests == 1
    assert by_key["a"].prompt_tokens == 30


async def test_report_counts_outcomes(ledger: Ledger) -> None:
    await ledger.record(_row("ok"))
    await ledger.record(_row("e", outcome="error", error_kind="timeout"))
    await ledger.record(_row("r", outcome="rejected", cost_usd=Decimal(0)))
    await ledger.record(_row("c", outcome="cancelled", estimated=True))
    [line] = await ledger.usage_report("client", T0, T0 + timedelta(seconds=1))
    assert (line.ok, line.errors, line.rejected, line.cancelled) == (1, 1, 1, 1)
    assert line.estimated_requests == 1
    assert line.mean_latency_ms == 812.5


async def test_report_by_local_day(ledger: Ledger) -> None:
    await _record_mix(ledger)
    # The "late" row at 23:30 UTC on 28 March is already 29 March in Berlin (UTC+1).
    utc_days = await ledger.usage_report("day", T0 - timedelta(days=3), T0 + timedelta(days=1))
    berlin_days = await ledger.usage_report(
        "day", T0 - timedelta(days=3), T0 + timedelta(days=1), timezone="Europe/Berlin"
    )
    assert [(line.key, line.requests) for line in utc_days] == [("2026-03-26", 1), ("2026-03-28", 4)]
    assert [(line.key, line.requests) for line in berlin_days] == [
        ("2026-03-26", 1),
        ("2026-03-28", 3),
        ("2026-03-29", 1),
    ]


async def test_report_rejects_unknown_group(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="group"):
        await ledger.usage_report("model", T0, T0)  # type: ignore[arg-type]


def test_reader_on_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not found"):
        LedgerReader(tmp_path / "none.sqlite3").spend_since("global", T0)


async def test_reader_works_after_writer_closed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.open()
    await ledger.record(_row())
    await ledger.close()
    assert LedgerReader(ledger.path).spend_since("global", T0).usd == Decimal("0.005615")
