"""``dbtools db ...``: the embedded PostgreSQL cluster."""

from __future__ import annotations

from typing import Any

from dbtools.cli.base import Commands, Context
from dbtools.cli.exits import Exit

commands = Commands()
commands.group(
    "db",
    help="the embedded PostgreSQL cluster",
    example='dbtools db start\n  dbtools db status\n  psql "$(dbtools db url)"',
)


def _embedded_only(ctx: Context) -> None:
    if ctx.database_url is not None:
        from dbtools.errors import ConfigurationError

        raise ConfigurationError(
            "the db commands work on the embedded PostgreSQL only: leave out --database-url"
        )


def _document() -> dict[str, Any]:
    from dbtools import config, localdb

    cluster = localdb.default_cluster()
    initialised = cluster.is_initialised()
    return {
        "initialised": initialised,
        "running": cluster.is_running(),
        "version": cluster.server_version() if initialised else None,
        "data_dir": str(cluster.placement.data_dir),
        "socket_dir": str(cluster.placement.socket_dir),
        "url": cluster.target(config.DEFAULT_DBNAME).url(),
    }


@commands.command(
    "db start",
    help="initialise (once) and start the embedded cluster",
    example="dbtools db start",
)
def start(ctx: Context) -> int:
    _embedded_only(ctx)
    from dbtools import localdb

    started = localdb.default_cluster().start()
    document = {"started": started, **_document()}
    verb = "started" if started else "already running:"
    ctx.emit(
        document,
        f"{verb} embedded PostgreSQL {document['version']} (socket in {document['socket_dir']})",
    )
    return Exit.OK


@commands.command("db stop", help="stop the embedded cluster", example="dbtools db stop")
def stop(ctx: Context) -> int:
    _embedded_only(ctx)
    from dbtools import localdb

    stopped = localdb.default_cluster().stop()
    human = (
        "stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL is not running"
    )
    ctx.emit({"stopped": stopped}, human)
    return Exit.OK


@commands.command(
    "db status",
    help="whether it runs, and where (exit 3 if not)",
    example="dbtools db status || dbtools db start",
)
def status(ctx: Context) -> int:
    _embedded_only(ctx)
    document = _document()
    if not document["initialised"]:
        human = (
            f"not initialised (would live in {document['data_dir']}); `dbtools db start` makes it"
        )
    elif not document["running"]:
        human = f"stopped (data in {document['data_dir']})"
    else:
        human = (
            f"running: PostgreSQL {document['version']}, socket in {document['socket_dir']}, "
            f"data in {document['data_dir']}"
        )
    ctx.emit(document, human)
    return Exit.OK if document["running"] else Exit.UNAVAILABLE


@commands.command(
    "db url",
    help="print the URL of dbtools_system in the embedded cluster",
    example='psql "$(dbtools db url)"',
)
def url(ctx: Context) -> int:
    _embedded_only(ctx)
    value = _document()["url"]
    ctx.emit({"url": value}, value)
    return Exit.OK
