"""``dbtools tenants ...``: list, show and change tenants, and import them from CSV."""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from dbtools.cli.base import Commands, Context, argument, json_text, printable, say, table
from dbtools.cli.exits import Exit
from dbtools.cli.migrations import positive_int

if TYPE_CHECKING:
    import psycopg

    from dbtools.errors import ImportFailed
    from dbtools.importing import Phase
    from dbtools.tenants import Tenant, TenantEvent

commands = Commands()
commands.group(
    "tenants",
    help="list, show and change tenants",
    example="dbtools tenants list\n  dbtools tenants show acme",
)
_SLUG = argument("slug")
_ACTOR = argument(
    "--actor", metavar="NAME", help="who makes the change, recorded in the tenant's history"
)


def _acting(conn: psycopg.Connection[Any], actor: str | None) -> AbstractContextManager[None]:
    """The change recorded as made by ``actor`` (tenants.acting_as), or by nobody in particular."""
    from dbtools import tenants

    return nullcontext() if actor is None else tenants.acting_as(conn, actor)


def tenant_document(tenant: Tenant) -> dict[str, Any]:
    """A tenant as its JSON document (UUID and ISO-8601 strings). The settings are JSON as they
    came from jsonb, whatever their depth (a row written in psql may nest deeper than Pydantic's
    serializer goes)."""
    document: dict[str, Any] = tenant.model_dump(mode="json", exclude={"settings"})
    return {**document, "settings": tenant.settings}


def tenant_text(tenant: Tenant) -> str:
    """A tenant as aligned ``field  value`` lines, control characters escaped."""
    return "\n".join(
        f"{field:<11} {printable(json_text(value) if field == 'settings' else str(value))}"
        for field, value in tenant_document(tenant).items()
    )


def _limit(text: str) -> int:
    value = positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be at most 1000, not {value}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    from dbtools import jsonnumbers  # light: json, decimal and re

    try:
        value = jsonnumbers.exact.decode(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("nested too deeply") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {type(value).__name__}")
    return value


STDIN: Final = "-"
# Bad rows printed by `tenants import` on stderr; --json lists every one.
SHOWN_ERRORS = 20


def _csv_file(text: str) -> Path | Literal["-"]:
    """``-`` (standard input), or the path of something to read: a regular file, a FIFO, a
    device such as ``/dev/stdin``. Only a directory, or what is missing or unreadable, is
    refused here; nothing is opened yet (opening a FIFO waits for its writer)."""
    if text == STDIN:
        return STDIN
    if not text:
        raise argparse.ArgumentTypeError("no file given (- reads standard input)")
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"no such file: {text}") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a CSV file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text}: permission denied")
    return path


class _ProgressLine:
    """An import's progress as one line of stderr, rewritten in place (for a terminal)."""

    def __init__(self) -> None:
        self.width = 0

    def __call__(self, phase: Phase, count: int) -> None:
        # By value: importing Phase here would load psycopg whenever the CLI starts.
        if phase.value == "read":
            text = f"reading: {count:,} rows"
        elif phase.value == "stage":
            text = f"looking for taken slugs: {count:,} rows"
        else:
            text = f"inserting: {count:,} tenants"
        print(f"\r{text.ljust(self.width)}", end="", file=sys.stderr, flush=True)
        self.width = len(text)

    def end(self) -> None:
        """End the line, so that what follows starts on a line of its own."""
        if self.width:
            print(file=sys.stderr, flush=True)
            self.width = 0


@commands.command(
    "tenants list",
    help="tenants ordered by slug",
    example="dbtools tenants list --status suspended\n"
    "  dbtools tenants list --after acme --limit 20",
    arguments=[
        argument("--status", choices=("active", "suspended"), help="only this status"),
        argument("--after", metavar="SLUG", help="start after this slug (next page)"),
        argument(
            "--limit", type=_limit, default=100, metavar="N", help="at most N (1-1000, default 100)"
        ),
    ],
)
def list_(ctx: Context, status: str | None, after: str | None, limit: int) -> int:
    from dbtools import tenants

    with ctx.connect() as conn:
        page = tenants.list_tenants(conn, status=status, after=after, limit=limit)
    next_after = page[-1].slug if len(page) == limit else None
    document = {"tenants": [tenant_document(t) for t in page], "next_after": next_after}
    rows = [["SLUG", "NAME", "STATUS", "CREATED"]]
    rows += [[t.slug, t.name, t.status.value, f"{t.created_at:%Y-%m-%d %H:%M}"] for t in page]
    human = table(rows) if page else "no tenants"
    if next_after:
        human += f"\n(more: --after {next_after})"
    ctx.emit(document, human)
    return Exit.OK


@commands.command(
    "tenants show", help="one tenant", example="dbtools --json tenants show acme", arguments=[_SLUG]
)
def show(ctx: Context, slug: str) -> int:
    from dbtools import tenants
    from dbtools.errors import TenantNotFound
    from dbtools.slugs import validate_slug

    validate_slug(slug)
    with ctx.connect() as conn:
        tenant = tenants.get_by_slug(conn, slug)
    if tenant is None:
        raise TenantNotFound(slug)
    ctx.emit(tenant_document(tenant), tenant_text(tenant))
    return Exit.OK


@commands.command(
    "tenants create",
    help="create a tenant",
    example='dbtools tenants create acme "Acme Corp" --settings \'{"plan": "pro"}\'',
    arguments=[
        _SLUG,
        argument("name"),
        argument("--settings", type=_json_object, metavar="JSON", help="a JSON object"),
        _ACTOR,
    ],
)
def create(
    ctx: Context, slug: str, name: str, settings: dict[str, Any] | None, actor: str | None
) -> int:
    from dbtools import tenants

    with ctx.connect() as conn, _acting(conn, actor):
        tenant = tenants.create(conn, slug, name, settings=settings)
    ctx.emit(tenant_document(tenant), f"created tenant {tenant.slug!r} ({printable(tenant.name)})")
    return Exit.OK


@commands.command(
    "tenants rename",
    help="change a tenant's name",
    example='dbtools tenants rename acme "ACME Corporation"',
    arguments=[_SLUG, argument("name"), _ACTOR],
)
def rename(ctx: Context, slug: str, name: str, actor: str | None) -> int:
    from dbtools import tenants

    with ctx.connect() as conn, _acting(conn, actor):
        tenant = tenants.update(conn, slug, name=name)
    ctx.emit(
        tenant_document(tenant), f"renamed tenant {tenant.slug!r} to '{printable(tenant.name)}'"
    )
    return Exit.OK


@commands.command(
    "tenants suspend",
    help="suspend a tenant (idempotent)",
    example="dbtools tenants suspend acme",
    arguments=[_SLUG, _ACTOR],
)
def suspend(ctx: Context, slug: str, actor: str | None) -> int:
    from dbtools import tenants

    with ctx.connect() as conn, _acting(conn, actor):
        tenant = tenants.suspend(conn, slug)
    ctx.emit(tenant_document(tenant), f"tenant {tenant.slug!r} is suspended")
    return Exit.OK


@commands.command(
    "tenants activate",
    help="activate a tenant (idempotent)",
    example="dbtools tenants activate acme",
    arguments=[_SLUG, _ACTOR],
)
def activate(ctx: Context, slug: str, actor: str | None) -> int:
    from dbtools import tenants

    with ctx.connect() as conn, _acting(conn, actor):
        tenant = tenants.activate(conn, slug)
    ctx.emit(tenant_document(tenant), f"tenant {tenant.slug!r} is active")
    return Exit.OK


@commands.command(
    "tenants delete",
    help="delete a tenant (asks on a terminal; without one it needs --yes)",
    example="dbtools tenants delete acme --yes",
    arguments=[
        _SLUG,
        argument("--yes", action="store_true", help="do not ask for confirmation"),
        _ACTOR,
    ],
)
def delete(ctx: Context, slug: str, yes: bool, actor: str | None) -> int:
    from dbtools import tenants
    from dbtools.slugs import validate_slug

    validate_slug(slug)
    if actor is not None:
        tenants.validate_actor(actor)  # before asking
    if not yes:
        if not sys.stdin.isatty():
            say(
                f"dbtools: error: not deleting {slug!r}: add --yes (no terminal to ask on)",
                err=True,
            )
            return Exit.USAGE
        # The question goes to stderr: stdout may be a file, and with --json holds one document.
        say(f"delete tenant {slug!r} and everything it owns? [y/N] ", err=True, end="")
        answer = sys.stdin.readline()  # "" at Ctrl-D: no answer is no
        if not answer:
            say(err=True)
        if answer.strip().lower() not in ("y", "yes"):
            say(f"not deleted: {slug!r}", err=True)
            return Exit.DOMAIN
    with ctx.connect() as conn, _acting(conn, actor):
        tenants.delete(conn, slug)
    ctx.emit({"deleted": slug}, f"deleted tenant {slug!r}")
    return Exit.OK


def event_document(event: TenantEvent) -> dict[str, Any]:
    """An event as its JSON document; the values are JSON as they came from jsonb."""
    document: dict[str, Any] = event.model_dump(mode="json", exclude={"old_values", "new_values"})
    return {**document, "old_values": event.old_values, "new_values": event.new_values}


def _change(event: TenantEvent) -> str:
    """What an event changed, in a few words: ``old -> new`` of its column."""
    if event.kind.value == "created":
        values = event.new_values or {}
        return f"name={json_text(values.get('name'))}"
    if event.kind.value == "deleted":
        return ""
    old, new = event.old_values or {}, event.new_values or {}
    column = next(iter(new), "")
    return f"{column}: {json_text(old.get(column))} -> {json_text(new.get(column))}"


@commands.command(
    "tenants history",
    help="every recorded change of a tenant, also after its deletion (oldest first)",
    example="dbtools tenants history acme\n  dbtools --json tenants history acme",
    arguments=[_SLUG],
)
def history(ctx: Context, slug: str) -> int:
    from dbtools import tenants
    from dbtools.errors import TenantNotFound
    from dbtools.slugs import validate_slug

    validate_slug(slug)
    with ctx.connect() as conn:
        events = tenants.history(conn, slug)
    if not events:
        raise TenantNotFound(slug)
    rows = [["WHEN", "SLUG", "EVENT", "CHANGE", "DB USER", "ACTOR"]]
    rows += [
        [
            f"{e.occurred_at:%Y-%m-%d %H:%M:%S}",
            e.slug,
            e.kind.value,
            _change(e),
            e.db_user,
            e.actor or "",
        ]
        for e in events
    ]
    ctx.emit({"slug": slug, "events": [event_document(e) for e in events]}, table(rows))
    return Exit.OK


@commands.command(
    "tenants import",
    help="create tenants from CSV, all or nothing",
    example="dbtools tenants import tenants.csv\n"
    "  gunzip -c tenants.csv.gz | dbtools tenants import -\n\n"
    "The file's header is slug,name or slug,name,settings (settings: a JSON object). FILE may\n"
    "be - (standard input), /dev/stdin, a FIFO or <(command). The first "
    f"{SHOWN_ERRORS} bad rows are\nprinted; --json lists every one.",
    arguments=[argument("file", type=_csv_file, metavar="FILE.csv"), _ACTOR],
)
def import_(ctx: Context, file: Path | Literal["-"], actor: str | None) -> int:
    from dbtools import importing
    from dbtools.errors import ImportFailed

    progress = _ProgressLine() if sys.stderr.isatty() and not ctx.json else None
    try:
        name = str(file) if isinstance(file, Path) else "<stdin>"  # as the user wrote it
        with _opened(file) as source:  # all of it, before connecting: a pipe may be slow
            checked = importing.check_csv(source, name=name, progress=progress)
        with ctx.connect() as conn, _acting(conn, actor):
            imported = importing.insert_checked(conn, checked, progress=progress)
    except ImportFailed as failure:
        if progress is not None:
            progress.end()
        if ctx.json:
            errors = [{"line": e.line, "message": e.message} for e in failure.errors]
            ctx.emit({"imported": 0, "errors": errors}, "")
        else:
            _say_bad_rows(failure)
        raise
    finally:
        if progress is not None:
            progress.end()
    where = printable(str(file)) if isinstance(file, Path) else "standard input"
    ctx.emit({"imported": imported, "errors": []}, f"imported {imported} tenants from {where}")
    return Exit.OK


@contextmanager
def _opened(file: Path | Literal["-"]) -> Iterator[Path | TextIO]:
    """A path as it is (the import opens it), or for ``-`` standard input as the csv module
    wants it whatever the locale: UTF-8, a BOM allowed, line ends untouched. The wrapper is
    detached afterwards, so that sys.stdin itself stays open."""
    if isinstance(file, Path):
        yield file
        return
    if sys.stdin is None:  # started with standard input closed (<&-)
        from dbtools.errors import ConfigurationError

        raise ConfigurationError("standard input is closed: there is nothing to import from -")
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    try:
        yield stdin
    finally:
        stdin.detach()


def _say_bad_rows(failure: ImportFailed) -> None:
    """The first SHOWN_ERRORS bad rows on stderr, one line each, then how many more there are."""
    for error in failure.errors[:SHOWN_ERRORS]:
        say(printable(f"{failure.source}: {error}"), err=True)
    more = len(failure.errors) - SHOWN_ERRORS
    if more > 0:
        say(printable(f"{failure.source}: ... and {more} more (--json lists every one)"), err=True)
