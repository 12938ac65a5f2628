"""``dbtools migrate``, ``rollback`` and ``status``: the migrations in ``sql/``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dbtools.cli.base import Commands, Context, argument
from dbtools.cli.exits import Exit

if TYPE_CHECKING:
    from dbtools.config import Target

commands = Commands()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def checked_target(ctx: Context) -> Target:
    """The target, once the migrations folder was read: a missing or broken folder fails
    before anything is created, or the embedded cluster started."""
    from dbtools import migrations

    migrations.listed()
    return ctx.target()


def create_and_apply(ctx: Context) -> tuple[bool, list[str]]:
    """Create the database if missing (saying so), apply what is pending: what ``migrate`` and
    ``demo`` share."""
    from dbtools import migrations

    target = checked_target(ctx)
    created = migrations.ensure_database(target)
    if created:
        ctx.note(f"created database {target.dbname!r}")
    return created, migrations.apply(target)


@commands.command(
    "migrate",
    help="create the database if missing, apply pending migrations",
    example="dbtools migrate\n  dbtools migrate --dry-run > pending.sql",
    arguments=[
        argument(
            "--dry-run", action="store_true", help="print the SQL that would run; change nothing"
        )
    ],
)
def migrate(ctx: Context, dry_run: bool) -> int:
    from dbtools import migrations

    if dry_run:
        plan = migrations.plan(checked_target(ctx))
        document = {
            "database": plan.database,
            "would_create_database": plan.create_database,
            "pending": [{"id": s.id, "file": str(s.path), "sql": s.sql} for s in plan.pending],
        }
        ctx.emit(document, plan.script())
        return Exit.OK
    created, applied = create_and_apply(ctx)
    dbname = ctx.target().dbname
    human = "\n".join(f"applied {migration_id}" for migration_id in applied)
    document = {"database": dbname, "created_database": created, "applied": applied}
    ctx.emit(document, human or f"no pending migrations: {dbname!r} is up to date")
    return Exit.OK


@commands.command(
    "rollback",
    help="roll back the newest migration(s)",
    example="dbtools rollback\n  dbtools rollback --count 2",
    arguments=[
        argument("--count", type=positive_int, default=1, metavar="N", help="how many (default: 1)")
    ],
)
def rollback(ctx: Context, count: int) -> int:
    from dbtools import migrations

    rolled_back = migrations.rollback(checked_target(ctx), count=count)
    human = "\n".join(f"rolled back {migration_id}" for migration_id in rolled_back)
    ctx.emit({"rolled_back": rolled_back}, human or "nothing to roll back")
    return Exit.OK


@commands.command(
    "status",
    help="applied and pending migrations (exit 3 while any is pending)",
    example="dbtools status && echo up to date",
)
def status(ctx: Context) -> int:
    from dbtools import migrations

    states = migrations.status(checked_target(ctx))
    pending = sum(state.applied_at is None for state in states)
    unknown = sum(state.path is None for state in states)
    lines = []
    for state in states:
        when = state.applied_at.strftime("%Y-%m-%d %H:%M:%S UTC") if state.applied_at else ""
        note = "  (not in this checkout)" if state.path is None else ""
        lines.append(f"{'applied' if when else 'pending':<8} {when:<23} {state.id}{note}")
    lines.append(f"{len(states) - pending} applied, {pending} pending")
    if unknown:
        lines.append(f"{unknown} applied migration(s) are not in this checkout's sql/")
    document = {
        "migrations": [
            {
                "id": s.id,
                "applied_at": s.applied_at.isoformat() if s.applied_at else None,
                "in_checkout": s.path is not None,
            }
            for s in states
        ],
        "applied": len(states) - pending,
        "pending": pending,
    }
    ctx.emit(document, "\n".join(lines))
    return Exit.UNAVAILABLE if pending else Exit.OK
