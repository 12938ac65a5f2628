"""``dbtools db ...``: the embedded PostgreSQL cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbtools.cli.base import Commands, Context, argument
from dbtools.cli.exits import Exit

if TYPE_CHECKING:
    from dbtools.localdb import Cluster

commands = Commands()
commands.group(
    "db",
    help="the embedded PostgreSQL cluster",
    example='dbtools db start\n  dbtools db status\n  psql "$(dbtools db url)"',
)


def _cluster(ctx: Context) -> Cluster:
    """The embedded cluster, one object per command (so its binaries are found once); the db
    commands refuse --database-url rather than ignore it."""
    from dbtools import localdb
    from dbtools.errors import ConfigurationError

    if ctx.database_url is not None:
        raise ConfigurationError(
            "the db commands work on the embedded PostgreSQL only: leave out --database-url"
        )
    return localdb.default_cluster()


def _url(cluster: Cluster) -> str:
    from dbtools import config

    return cluster.target(config.DEFAULT_DBNAME).url()


def _document(cluster: Cluster) -> dict[str, Any]:
    initialised = cluster.is_initialised()
    return {
        "initialised": initialised,
        "running": cluster.is_running(),
        "version": cluster.server_version() if initialised else None,
        "data_dir": str(cluster.placement.data_dir),
        "socket_dir": str(cluster.placement.socket_dir),
        "url": _url(cluster),
    }


@commands.command(
    "db start",
    help="initialise (once) and start the embedded cluster",
    example="dbtools db start",
)
def start(ctx: Context) -> int:
    cluster = _cluster(ctx)
    started = cluster.start()
    document = {"started": started, **_document(cluster)}
    verb = "started" if started else "already running:"
    ctx.emit(
        document,
        f"{verb} embedded PostgreSQL {document['version']} (socket in {document['socket_dir']})",
    )
    return Exit.OK


@commands.command("db stop", help="stop the embedded cluster", example="dbtools db stop")
def stop(ctx: Context) -> int:
    stopped = _cluster(ctx).stop()
    human = (
        "stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL is not running"
    )
    ctx.emit({"stopped": stopped}, human)
    return Exit.OK


@commands.command(
    "db delete",
    help="stop the embedded cluster and delete it, data included (needs --yes)",
    example="dbtools db delete --yes",
    arguments=[argument("--yes", action="store_true", help="really delete it")],
)
def delete(ctx: Context, yes: bool) -> int:
    from dbtools.errors import ConfigurationError

    cluster = _cluster(ctx)
    if not yes:
        raise ConfigurationError(
            f"not deleting the embedded PostgreSQL in {cluster.placement.root}: add --yes"
        )
    deleted = cluster.delete()
    human = (
        f"deleted the embedded PostgreSQL in {cluster.placement.root}"
        if deleted
        else "there is no embedded PostgreSQL to delete"
    )
    ctx.emit({"deleted": deleted}, human)
    return Exit.OK


@commands.command(
    "db status",
    help="whether it runs, and where (exit 3 if not)",
    example="dbtools db status || dbtools db start",
)
def status(ctx: Context) -> int:
    document = _document(_cluster(ctx))
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
    value = _url(_cluster(ctx))  # only the placement: no pg_ctl call
    ctx.emit({"url": value}, value)
    return Exit.OK
