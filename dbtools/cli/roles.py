"""``dbtools roles setup``: the runtime role applications log in as, and its privileges."""

from __future__ import annotations

from dbtools.cli.base import Commands, Context, argument, printable
from dbtools.cli.exits import Exit

commands = Commands()
commands.group(
    "roles",
    help="the database roles: the runtime role of applications",
    example="dbtools roles setup\n  dbtools roles setup --role billing_app",
)

DEFAULT_ROLE = "dbtools_app"  # dbtools.roles.DEFAULT_RUNTIME_ROLE, without importing psycopg


@commands.command(
    "roles setup",
    help="create the runtime role if missing and grant it exactly what applications need "
    "(idempotent; run it with the migrations' URL)",
    example='dbtools --database-url "$MIGRATIONS_URL" roles setup --role dbtools_app\n'
    "  psql \"$MIGRATIONS_URL\" -c '\\password dbtools_app'   # then give it a password",
    arguments=[
        argument(
            "--role",
            default=DEFAULT_ROLE,
            metavar="NAME",
            help=f"the runtime role (default: {DEFAULT_ROLE})",
        )
    ],
)
def setup(ctx: Context, role: str) -> int:
    from dbtools import roles

    roles.validate_role_name(role)  # before the embedded cluster is started
    with ctx.connect() as conn:
        created = roles.setup_runtime_role(conn, role)
        database = conn.info.dbname
    verb = "created role" if created else "role"
    human = (
        f"{verb} {printable(role)!r} may read and change tenants and read tenant_events in "
        f"{database!r}, and nothing more"
    )
    ctx.emit({"role": role, "created": created, "database": database}, human)
    return Exit.OK
