"""Record the sha256 of every applied migration's file: yoyo runs this hook after `yoyo apply`.

yoyo keeps no checksum of what it applied, and dbtools refuses to run once an applied migration
has been edited, comparing each file with the checksum recorded here. yoyo runs post-apply hooks
after every `yoyo apply`; dbtools runs this one before it verifies and after each migration it
applies. It uses only the standard library, so a DBA's plain `yoyo` runs it too.

A checksum belongs to one application of a migration: it is stored with the applied_at_utc of
yoyo's row. Once that row is gone (rolled back, by yoyo or by dbtools) or newer (applied again),
the checksum is forgotten, and the file as it is now is recorded for the new application.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from yoyo import step

# yoyo loads this file by its path, so __file__ is in the migrations folder.
FOLDER = Path(__file__).resolve().parent

CREATE_CHECKSUMS = """
    CREATE TABLE IF NOT EXISTS _dbtools_migration_checksum (
        migration_id text PRIMARY KEY,
        sha256 text NOT NULL,
        applied_at_utc timestamp,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )
"""
# The table's first version had no applied_at_utc: each checksum it holds belongs to the
# application yoyo has on record now.
UPGRADE_CHECKSUMS = """
    ALTER TABLE _dbtools_migration_checksum ADD COLUMN IF NOT EXISTS applied_at_utc timestamp
"""
PIN_UNPINNED = """
    UPDATE _dbtools_migration_checksum c
    SET applied_at_utc = y.applied_at_utc
    FROM _yoyo_migration y
    WHERE c.applied_at_utc IS NULL AND y.migration_id = c.migration_id
"""
FORGET_STALE = """
    DELETE FROM _dbtools_migration_checksum c
    WHERE NOT EXISTS (
        SELECT FROM _yoyo_migration y
        WHERE y.migration_id = c.migration_id AND y.applied_at_utc = c.applied_at_utc
    )
"""
APPLIED = "SELECT migration_id, applied_at_utc FROM _yoyo_migration"
RECORD = """
    INSERT INTO _dbtools_migration_checksum (migration_id, sha256, applied_at_utc)
    VALUES (%s, %s, %s)
    ON CONFLICT (migration_id) DO NOTHING
"""


def record_checksums(conn: Any) -> None:
    cursor = conn.cursor()
    for statement in (CREATE_CHECKSUMS, UPGRADE_CHECKSUMS, PIN_UNPINNED, FORGET_STALE):
        cursor.execute(statement)
    cursor.execute(APPLIED)
    for migration_id, applied_at in cursor.fetchall():
        for path in (FOLDER / f"{migration_id}.sql", FOLDER / f"{migration_id}.py"):
            if path.is_file():
                checksum = hashlib.sha256(path.read_bytes()).hexdigest()
                cursor.execute(RECORD, (migration_id, checksum, applied_at))


step(record_checksums)
