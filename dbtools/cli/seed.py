"""``dbtools seed`` and ``dbtools demo``: the demo tenant."""

from __future__ import annotations

from dbtools.cli.base import Commands, Context, printable
from dbtools.cli.exits import Exit
from dbtools.cli.migrations import create_and_apply
from dbtools.cli.tenants import tenant_document, tenant_text

commands = Commands()


@commands.command("seed", help="create the demo tenant unless it exists", example="dbtools seed")
def seed(ctx: Context) -> int:
    from dbtools import seed

    with ctx.connect() as conn:
        tenant, created = seed.seed(conn)
    if created:
        human = f"created tenant {tenant.slug!r} ({printable(tenant.name)})"
    else:
        human = f"tenant {tenant.slug!r} already exists; left unchanged"
    ctx.emit({"created": created, "tenant": tenant_document(tenant)}, human)
    return Exit.OK


@commands.command(
    "demo", help="migrate, seed, and print the demo tenant read back", example="dbtools demo"
)
def demo(ctx: Context) -> int:
    from dbtools import seed, tenants
    from dbtools.errors import TenantNotFound

    _, applied = create_and_apply(ctx)
    for migration_id in applied:
        ctx.note(f"applied {migration_id}")
    with ctx.connect() as conn:
        _, created = seed.seed(conn)
        tenant = tenants.get_by_slug(conn, seed.DEMO_SLUG)
    if tenant is None:  # deleted by someone else between the two calls
        raise TenantNotFound(seed.DEMO_SLUG)
    if created:
        ctx.note(f"created tenant {tenant.slug!r} ({printable(tenant.name)})")
    else:
        ctx.note(f"tenant {tenant.slug!r} already exists; left unchanged")
    human = "\nthe demo tenant, read back from the database:\n" + tenant_text(tenant)
    document = {"applied": applied, "created": created, "tenant": tenant_document(tenant)}
    ctx.emit(document, human)
    return Exit.OK
