"""Onboarding many tenants at once from CSV: all rows or none.

The CSV comes from a file (a regular file, ``/dev/stdin``, a FIFO, a shell's ``<(...)``) or an
open text stream. Its header is ``slug,name`` or ``slug,name,settings`` (settings: a JSON
object). Every row is checked first, with the same rules as :mod:`dbtools.tenants`, before the
database is touched (so a slow pipe holds no transaction open); then one ``COPY`` writes the
rows into ``tenants``, where the table's own rules (``tenants_slug_key``, the reserved slugs,
the constraints) and triggers (the audit trail, the notifications) apply to them as to any
insert.

Any bad row (invalid slug, duplicate within the file or with the table, reserved, blank name,
bad JSON) is reported with its line number in the file, the header being line 1, and nothing is
written. :class:`ImportFailed` lists every bad row: when the file or the database refuses one,
the good rows are staged in a temporary table (``COPY``) and looked up in ``tenants`` and
``reserved_slugs`` at once, so that every taken slug is named with its line, not only the first
the database met. Each message quotes at most a short, escaped excerpt of a value or line
(:func:`dbtools.errors.excerpt`).

Progress is reported by :class:`Phase`.
"""

from __future__ import annotations

import csv
import enum
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import psycopg

from dbtools import jsonnumbers, tenants
from dbtools.db import Scope, scope
from dbtools.errors import DbToolsError, ImportFailed, ReservedSlug, RowError, excerpt
from dbtools.slugs import validate_new_slug

__all__ = [
    "HEADERS",
    "CheckedCsv",
    "ImportFailed",
    "Phase",
    "Progress",
    "RowError",
    "check_csv",
    "import_csv",
    "insert_checked",
]

HEADERS = (("slug", "name"), ("slug", "name", "settings"))
PROGRESS_EVERY = 1000
MAX_LINE = 1 << 20  # characters in one line of the file: far more than any real tenant row
BOM = "\ufeff"
HEADER_EXCERPT = 30

# COPY writes rows in file order, so tenant_events records them in file order too.
COPY_TENANTS = "COPY tenants (slug, name, settings) FROM STDIN"
# Where refused rows are looked into: every slug of the file that is taken or reserved.
CREATE_STAGING = """
    CREATE TEMPORARY TABLE tenant_import (
        line integer NOT NULL,
        slug text NOT NULL
    ) ON COMMIT DROP
"""
COPY_STAGING = "COPY tenant_import (line, slug) FROM STDIN"
# Slugs taken by a tenant, and slugs a DBA reserved (the built-in ones are refused in Python):
# one row per line at most (both keys are unique), a slug both taken and reserved as taken.
EXISTING = """
    SELECT s.line, s.slug, t.slug IS NULL AS reserved
    FROM tenant_import s
    LEFT JOIN tenants t ON t.slug = s.slug
    LEFT JOIN reserved_slugs r ON r.slug = s.slug
    WHERE t.slug IS NOT NULL OR r.slug IS NOT NULL
    ORDER BY s.line
"""


class Phase(enum.Enum):
    """A step of an import; ``progress`` gets it with a count of rows."""

    READ = "read"  # records read and checked (the header not counted)
    # Only when a row is refused: the good rows staged (COPY) and looked up in tenants.
    STAGE = "stage"
    # Rows sent to the database (COPY into tenants); the last count comes once it inserted them
    # all, their triggers run.
    INSERT = "insert"


# progress(phase, count): called with 0 when a phase starts, every PROGRESS_EVERY rows within it,
# and with the phase's total when it ends; never twice in a row with the same arguments. It runs
# while the connection is busy with a COPY: it must not use the connection.
Progress = Callable[[Phase, int], None]


def import_csv(
    conn: psycopg.Connection[Any],
    source: str | os.PathLike[str] | TextIO,
    *,
    name: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Import every tenant in the CSV ``source``; return how many were created.

    ``source`` is a path (opened as UTF-8, a BOM allowed; a FIFO or ``/dev/stdin`` works, as it
    is read once, front to back) or an open text stream, which is read to its end and left open
    (open files with ``newline=""``, as the csv module wants). ``name`` names the source in
    :class:`ImportFailed`; the default is the file's name, or the stream's ``name``.

    All or nothing, and the caller owns the transaction, as everywhere in dbtools: inside the
    caller's transaction the import runs in a savepoint; on an idle connection that is not in
    autocommit it opens the caller's transaction and leaves the commit to the caller; in
    autocommit mode it is one transaction of its own. On :class:`ImportFailed` nothing is written
    and the connection is usable. ``progress``, if given, follows each :class:`Phase`
    (see :data:`Progress`).

    The same as :func:`check_csv` then :func:`insert_checked`; a caller that opens its
    connection only once the file is read (a slow pipe would otherwise hold it idle) calls those.
    """
    checked = check_csv(source, name=name, progress=progress)
    return insert_checked(conn, checked, progress=progress)


@dataclass(frozen=True)
class CheckedCsv:
    """A CSV file read and checked by :func:`check_csv`, the database not asked yet."""

    source: str  # what ImportFailed names
    rows: list[tuple[int, str, str, str]]  # the good rows: (line, slug, name, settings JSON)
    errors: list[RowError]  # the bad rows'


def check_csv(
    source: str | os.PathLike[str] | TextIO,
    *,
    name: str | None = None,
    progress: Progress | None = None,
) -> CheckedCsv:
    """Read and check every row of ``source`` (as for :func:`import_csv`), with no connection.

    Raises :class:`ImportFailed` for what ends the reading: a file that cannot be opened or
    read, is not UTF-8, has a wrong header, a malformed record. Bad rows are collected in the
    result; :func:`insert_checked` reports them, with the slugs the database refuses.
    """
    report = progress or _silent
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = path.name if name is None else name
        try:
            handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:  # opening it (reading errors are caught in _read)
            raise ImportFailed(label, [_unreadable(exc)]) from exc
        with handle:
            rows, errors = _read(handle, label, report)
    else:
        label = name if name is not None else str(getattr(source, "name", "<stream>"))
        rows, errors = _read(source, label, report)
    return CheckedCsv(label, rows, errors)


def insert_checked(
    conn: psycopg.Connection[Any], checked: CheckedCsv, *, progress: Progress | None = None
) -> int:
    """Insert the rows of ``checked`` (see :func:`import_csv`: all or nothing, the caller's
    transaction); return how many were created, or raise :class:`ImportFailed` listing every
    bad row, those the file holds and those the database refuses."""
    report = progress or _silent
    label, rows = checked.source, checked.rows
    if checked.errors:
        _refuse(conn, label, rows, list(checked.errors), report)
    try:
        with scope(conn, Scope.ATOMIC):
            return _insert(conn, rows, report)
    except (psycopg.errors.UniqueViolation, psycopg.errors.CheckViolation) as exc:
        # A slug taken (in the table, or by another writer) or reserved by a DBA; any other
        # refusal (a DBA's own unique index or check) is the database's, as for create.
        if exc.diag.constraint_name not in (tenants.SLUG_KEY, tenants.SLUG_RESERVED):
            raise
        _refuse(conn, label, rows, [], report, exc)


def _silent(phase: Phase, count: int) -> None:
    pass


def _insert(
    conn: psycopg.Connection[Any], rows: list[tuple[int, str, str, str]], report: Progress
) -> int:
    report(Phase.INSERT, 0)
    with conn.cursor() as cur:
        with cur.copy(COPY_TENANTS) as copy:
            for count, (_, slug, name, settings) in enumerate(rows, start=1):
                copy.write_row((slug, name, settings))
                if count % PROGRESS_EVERY == 0 and count < len(rows):
                    report(Phase.INSERT, count)
        created = cur.rowcount
    if created:
        report(Phase.INSERT, created)
    return created


def _refuse(
    conn: psycopg.Connection[Any],
    source: str,
    rows: list[tuple[int, str, str, str]],
    errors: list[RowError],
    report: Progress,
    refusal: psycopg.Error | None = None,
) -> NoReturn:
    """Raise ImportFailed with ``errors`` and every good row whose slug is taken or reserved,
    each with its line; ``refusal`` is the database's refusal of the rows, if it was one."""
    # Raised in the scope, which rolls back what it opened: the caller's connection is as it was.
    with scope(conn, Scope.ATOMIC), conn.cursor() as cur:
        cur.execute(CREATE_STAGING)
        report(Phase.STAGE, 0)
        with cur.copy(COPY_STAGING) as copy:
            for count, (line, slug, _, _) in enumerate(rows, start=1):
                copy.write_row((line, slug))
                if count % PROGRESS_EVERY == 0 and count < len(rows):
                    report(Phase.STAGE, count)
        for line, slug, reserved in cur.execute(EXISTING).fetchall():
            if reserved:
                errors.append(RowError(line, str(ReservedSlug(slug))))
            else:
                errors.append(RowError(line, f"a tenant with slug {excerpt(slug)} already exists"))
        if rows:
            report(Phase.STAGE, len(rows))
        if not errors:  # another writer took a slug, and rolled back since
            message = "another writer created one of these slugs meanwhile; try again"
            errors.append(RowError(None, message))
        raise ImportFailed(source, sorted(errors, key=lambda e: e.line or 0)) from refusal


def _read(
    handle: TextIO, source: str, report: Progress
) -> tuple[list[tuple[int, str, str, str]], list[RowError]]:
    """The good rows as (line, slug, name, settings JSON), and the errors of the bad ones."""
    rows: list[tuple[int, str, str, str]] = []
    errors: list[RowError] = []
    first_line: dict[str, int] = {}
    report(Phase.READ, 0)
    count = 0
    try:
        records = _records(csv.reader(_lines(handle), strict=True))
        header = next(records, None)
        if header is None:
            raise ImportFailed(source, [RowError(1, "the file is empty")])
        names = header[1]
        if names and names[0].startswith(BOM):  # a stream decoded as utf-8, not utf-8-sig
            names[0] = names[0][len(BOM) :]
        columns = tuple(name.strip().lower() for name in names)
        if columns not in HEADERS:
            # A shorter excerpt than elsewhere: the "header" may be the first line of any file
            # at all (/etc/shadow), and a right one is 18 characters.
            found = excerpt(",".join(names[: len(HEADERS[-1]) + 1]), HEADER_EXCERPT)
            message = f"the header must be slug,name or slug,name,settings, not {found}"
            raise ImportFailed(source, [RowError(1, message)])
        for count, (line, fields) in enumerate(records, start=1):
            if count % PROGRESS_EVERY == 0:
                report(Phase.READ, count)
            if not fields:
                continue  # a blank line
            try:
                row = _row(line, fields, len(columns), first_line)
            except (DbToolsError, ValueError) as exc:
                errors.append(RowError(line, str(exc)))
            else:
                rows.append(row)
    except OSError as exc:
        raise ImportFailed(source, [_unreadable(exc)]) from exc
    except UnicodeDecodeError as exc:
        raise ImportFailed(
            source, [RowError(None, f"the file is not UTF-8 ({exc.reason})")]
        ) from exc
    except _MalformedRecord as exc:
        error = RowError(exc.line, f"malformed CSV: {exc.reason} (the rest was not read)")
        raise ImportFailed(source, [*errors, error]) from exc
    if count % PROGRESS_EVERY:
        report(Phase.READ, count)
    return rows, errors


def _unreadable(exc: OSError) -> RowError:
    return RowError(None, f"cannot read the file: {exc.strerror or exc}")


class _MalformedRecord(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _lines(handle: TextIO) -> Iterator[str]:
    """The lines of ``handle``, none longer than MAX_LINE characters: a file with no line end
    (``/dev/zero``) would otherwise be read into memory whole."""
    number = 0
    while line := handle.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise _MalformedRecord(number, f"line {number} is longer than {MAX_LINE:,} characters")
        yield line


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
    slug = validate_new_slug(fields[0])
    if slug in first_line:
        raise ValueError(f"duplicate slug {excerpt(slug)} (first on line {first_line[slug]})")
    first_line[slug] = line
    name = tenants.validate_name(slug, fields[1])
    raw = fields[2].strip() if width == 3 and len(fields) == 3 else ""
    if not raw:
        return line, slug, name, "{}"
    try:
        settings = jsonnumbers.exact.decode(raw)
    except ValueError as exc:
        message = f"settings of tenant {excerpt(slug)} are not valid JSON: {exc}"
        raise ValueError(message) from None
    except RecursionError:
        raise ValueError(f"settings of tenant {excerpt(slug)} are nested too deeply") from None
    if type(settings) is dict and _stored_as_written(raw):
        return line, slug, name, raw
    return line, slug, name, tenants.settings_json(slug, settings)


def _stored_as_written(text: str) -> bool:
    """Whether the JSON object ``text`` (decoded without error) may go to the database as it is
    written: jsonb then stores what it would store from :func:`dbtools.tenants.settings_json`'s
    text, without the cost of writing it again (more than half the time of checking a row).

    So nothing that settings_json would refuse or change: no ``\\u`` escape (NUL, a lone
    surrogate), no fraction or exponent (settings_json may write the number otherwise: 1.50 as
    1.5), no more brackets than settings may nest, every character encodable. Text that only
    looks like one of these (a string holding "1.5") takes the long way, with the same result.
    """
    return (
        "\\u" not in text
        and _fraction_or_exponent(text) is None
        and text.count("{") + text.count("[") <= tenants.SETTINGS_MAX_DEPTH
        and (text.isascii() or tenants.encodable(text))
    )


_fraction_or_exponent = re.compile(r"[0-9][.eE]").search
