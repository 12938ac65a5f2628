"""Onboarding many tenants at once from a CSV file: all rows or none.

The file has a header ``slug,name`` or ``slug,name,settings`` (settings: a JSON object). Every row
is checked first, with the same rules as :mod:`dbtools.tenants`; the good rows go to a temporary
staging table with ``COPY``, which also finds slugs that exist already, and one ``INSERT ...
SELECT`` moves them into ``tenants``. Any bad row (invalid slug, duplicate within the file or with
the table, blank name, bad JSON) is reported with its line number in the file, the header being
line 1, and nothing is written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from dbtools import tenants
from dbtools.db import Scope, scope
from dbtools.errors import DbToolsError, ImportFailed, RowError
from dbtools.slugs import validate_slug

__all__ = ["HEADERS", "ImportFailed", "RowError", "import_csv"]

HEADERS = (("slug", "name"), ("slug", "name", "settings"))
PROGRESS_EVERY = 1000

CREATE_STAGING = """
    CREATE TEMPORARY TABLE tenant_import (
        line integer NOT NULL,
        slug text NOT NULL,
        name text NOT NULL,
        settings jsonb NOT NULL
    ) ON COMMIT DROP
"""
COPY_STAGING = "COPY tenant_import (line, slug, name, settings) FROM STDIN"
EXISTING = """
    SELECT s.line, s.slug
    FROM tenant_import s
    JOIN tenants t ON t.slug = s.slug
    ORDER BY s.line
"""
DROP_STAGING = "DROP TABLE tenant_import"
INSERT_ALL = """
    INSERT INTO tenants (slug, name, settings)
    SELECT slug, name, settings
    FROM tenant_import
    ORDER BY line
"""


def import_csv(
    conn: psycopg.Connection[Any],
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Import every tenant in the CSV file ``path``; return how many were created.

    All or nothing, and the caller owns the transaction, as everywhere in dbtools: inside the
    caller's transaction the import runs in a savepoint; on an idle connection that is not in
    autocommit it opens the caller's transaction and leaves the commit to the caller; in
    autocommit mode it is one transaction of its own. On :class:`ImportFailed` nothing is written
    and the connection is usable. ``progress`` is called with the rows read, every 1,000 rows.
    """
    rows, errors = _read(path, progress)
    try:
        with scope(conn, Scope.ATOMIC):
            return _load(conn, path.name, rows, errors)
    except psycopg.errors.UniqueViolation as exc:  # another writer took a slug meanwhile
        error = RowError(None, "another writer created one of these slugs meanwhile; try again")
        raise ImportFailed(path.name, [error]) from exc


def _load(
    conn: psycopg.Connection[Any],
    source: str,
    rows: list[tuple[int, str, str, str]],
    errors: list[RowError],
) -> int:
    with conn.cursor() as cur:
        cur.execute(CREATE_STAGING)
        with cur.copy(COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        for line, slug in cur.execute(EXISTING).fetchall():
            errors.append(RowError(line, f"a tenant with slug {slug!r} already exists"))
        if errors:
            raise ImportFailed(source, sorted(errors, key=lambda e: e.line or 0))
        cur.execute(INSERT_ALL)
        created = cur.rowcount
        cur.execute(DROP_STAGING)  # not left to the commit: the caller's transaction goes on
        return created


def _read(
    path: Path, progress: Callable[[int], None] | None
) -> tuple[list[tuple[int, str, str, str]], list[RowError]]:
    """The good rows as (line, slug, name, settings JSON), and the errors of the bad ones."""
    rows: list[tuple[int, str, str, str]] = []
    errors: list[RowError] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = _records(csv.reader(handle, strict=True))
            header = next(records, None)
            if header is None:
                raise ImportFailed(path.name, [RowError(1, "the file is empty")])
            columns = tuple(field.strip().lower() for field in header[1])
            if columns not in HEADERS:
                message = (
                    f"the header must be slug,name or slug,name,settings, not {','.join(header[1])}"
                )
                raise ImportFailed(path.name, [RowError(1, message)])
            for count, (line, fields) in enumerate(records, start=1):
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count)
                if not fields:
                    continue  # a blank line
                try:
                    row = _row(line, fields, len(columns), first_line)
                except (DbToolsError, ValueError) as exc:
                    errors.append(RowError(line, str(exc)))
                else:
                    rows.append(row)
    except OSError as exc:
        raise ImportFailed(
            path.name, [RowError(None, f"cannot read the file: {exc.strerror}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ImportFailed(
            path.name, [RowError(None, f"the file is not UTF-8 ({exc.reason})")]
        ) from exc
    except _MalformedRecord as exc:
        error = RowError(exc.line, f"malformed CSV: {exc.reason} (the rest was not read)")
        raise ImportFailed(path.name, [*errors, error]) from exc
    return rows, errors


class _MalformedRecord(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on (quoted fields may span lines)."""
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _MalformedRecord(line, str(exc)) from exc
        yield line, fields
        line = reader.line_num + 1


def _row(
    line: int, fields: list[str], width: int, first_line: dict[str, int]
) -> tuple[int, str, str, str]:
    if len(fields) != width and not (width == 3 and len(fields) == 2):
        raise ValueError(f"expected {width} fields, found {len(fields)}")
    slug = validate_slug(fields[0])
    if slug in first_line:
        raise ValueError(f"duplicate slug {slug!r} (first on line {first_line[slug]})")
    first_line[slug] = line
    name = tenants.validate_name(slug, fields[1])
    raw = fields[2].strip() if width == 3 and len(fields) == 3 else ""
    settings: object = {}
    if raw:
        try:
            settings = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(f"settings of tenant {slug!r} are not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"settings of tenant {slug!r} are nested too deeply") from None
    return line, slug, name, tenants.settings_json(slug, settings)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
