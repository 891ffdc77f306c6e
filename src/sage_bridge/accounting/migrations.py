"""Versioned schema migrations of the ledger database.

The database's `user_version` pragma stores the number of migrations applied. Each migration
runs in its own transaction together with the version bump, so a crash leaves the file at the
old or the new version, never in between. Add a migration by appending to LEDGER_MIGRATIONS;
never edit one that has shipped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class MigrationError(Exception):
    """The ledger database cannot be brought to the schema this bridge expects."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int  # the user_version after this migration; the first migration is 1
    description: str
    statements: tuple[str, ...]


LEDGER_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "create the requests table",
        (
            """
            CREATE TABLE requests (
                id INTEGER PRIMARY KEY,
                -- UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ: fixed width, so text order is time order
                time TEXT NOT NULL,
                request_id TEXT NOT NULL,
                endpoint TEXT NOT NULL CHECK (endpoint IN ('chat', 'embeddings')),
                client TEXT NOT NULL,
                route TEXT,
                deployment TEXT,
                provider TEXT,
                upstream_model TEXT,
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                cached_tokens INTEGER NOT NULL DEFAULT 0,
                cache_write_tokens INTEGER NOT NULL DEFAULT 0,
                -- exact decimal USD as text; NULL when the deployment is unpriced
                cost_usd TEXT,
                cost_unknown INTEGER NOT NULL DEFAULT 0 CHECK (cost_unknown IN (0, 1)),
                estimated INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),
                latency_ms REAL,
                ttft_ms REAL,
                attempts INTEGER NOT NULL DEFAULT 0,
                outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'rejected', 'cancelled')),
                error_kind TEXT,
                CHECK ((cost_usd IS NULL) = (cost_unknown = 1))
            )
            """,
            "CREATE INDEX requests_time ON requests (time)",
        ),
    ),
)


def schema_version(connection: sqlite3.Connection) -> int:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    return int(version)


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration] = LEDGER_MIGRATIONS) -> int:
    """Apply the migrations the database lacks and return its schema version.

    The connection must be in autocommit mode (isolation_level=None) so that the explicit
    transactions here are the only ones.
    """
    _check_sequence(migrations)
    current = schema_version(connection)
    if current > len(migrations):
        raise MigrationError(
            f"the ledger schema is version {current}, newer than version {len(migrations)} that this "
            "bridge knows; run a newer bridge, or move the ledger file aside to start a new one"
        )
    for migration in migrations[current:]:
        _apply(connection, migration)
    return schema_version(connection)


def _apply(connection: sqlite3.Connection, migration: Migration) -> None:
    logger.info("migrating the ledger to schema version %d: %s", migration.version, migration.description)
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in migration.statements:
            connection.execute(statement)
        # PRAGMA takes no parameters; the version is an int checked by _check_sequence.
        connection.execute(f"PRAGMA user_version = {int(migration.version)}")
    except sqlite3.Error as exc:
        connection.execute("ROLLBACK")
        raise MigrationError(
            f"ledger migration to version {migration.version} ({migration.description}) failed: {exc}"
        ) from exc
    connection.execute("COMMIT")


def _check_sequence(migrations: Sequence[Migration]) -> None:
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise MigrationError(
                f"migration {migration.description!r} has version {migration.version}, expected {index}; "
                "versions must count up from 1 without gaps"
            )
